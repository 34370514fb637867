//! No secret in storage: the raw tables hold neither the email in clear nor
//! any token or code that was handed to the client.

use crate::helpers::TestApp;
use serde_json::Value;

/// Every text and bytea value of a table, as text (bytea as raw bytes too).
async fn dump(app: &TestApp, table: &str) -> String {
    let rows: Vec<(String,)> =
        sqlx::query_as(&format!("SELECT row_to_json(t)::text FROM {table} t"))
            .fetch_all(&app.db)
            .await
            .unwrap();
    let mut all = rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n");
    // bytea renders as hex in JSON (converting that JSON back to bytes
    // decodes nothing): read every bytea column's raw bytes as well.
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns
         WHERE table_schema = 'public' AND table_name = $1 AND data_type = 'bytea'",
    )
    .bind(table)
    .fetch_all(&app.db)
    .await
    .unwrap();
    for column in columns {
        let values: Vec<Option<Vec<u8>>> =
            sqlx::query_scalar(&format!("SELECT \"{column}\" FROM {table}"))
                .fetch_all(&app.db)
                .await
                .unwrap();
        for bytes in values.into_iter().flatten() {
            all.push('\n');
            all.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
    all
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn no_email_token_or_code_handed_out_is_stored_in_clear() {
    let app = TestApp::spawn().await;
    let email = "secret.person@example.com";
    let user = app.signed_up_user(email).await;
    let refreshed: Value = app
        .refresh(user.refresh_token())
        .await
        .json()
        .await
        .unwrap();
    app.post_json(
        "/v1/auth/password/forgot",
        &serde_json::json!({"email": email}),
    )
    .await;
    let reset_code = app.code_for(email).await;
    let verification_code = app
        .mailbox()
        .iter()
        .find(|m| m.subject.contains("verification"))
        .map(|m| {
            m.text
                .split(|c: char| !c.is_ascii_digit())
                .find(|w| w.len() == 6)
                .unwrap()
                .to_owned()
        })
        .unwrap();

    let secrets = [
        email.to_owned(),
        user.refresh_token().to_owned(),
        refreshed["refresh_token"].as_str().unwrap().to_owned(),
        user.access().to_owned(),
        user.password.clone(),
        reset_code,
        verification_code,
    ];
    for table in [
        "users",
        "sessions",
        "refresh_tokens",
        "email_codes",
        "mail_outbox",
        "audit_events",
    ] {
        let contents = dump(&app, table).await;
        for secret in &secrets {
            if secret.len() == 6 && secret.bytes().all(|b| b.is_ascii_digit()) {
                // A 6-digit code: look for it as a whole number (hex and
                // ids are full of digits, so a substring match would flake).
                let found = contents
                    .split(|c: char| !c.is_ascii_digit())
                    .any(|run| run == secret);
                assert!(!found, "{table} holds a code in clear");
                continue;
            }
            assert!(
                !contents.contains(secret.as_str()),
                "{table} holds a secret in clear"
            );
            assert!(
                !contents.contains(&hex(secret)),
                "{table} holds a secret as hex"
            );
        }
    }
}
