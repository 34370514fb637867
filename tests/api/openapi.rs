//! `openapi.yaml` and the router agree exactly: every routed operation is
//! documented with the handler's name as its operationId and its route's
//! rate-limit class as `x-rate-limit-class`, and the spec documents nothing
//! the router lacks. The rule a forker cannot forget: an operation whose
//! body carries a password or a code is a `credentials` operation.
//! And two rules of form: every `/v1` operation declares the client
//! headers, and a `$ref` names a component, never a property inside one.

use crate::helpers::{TestApp, PROBE_PREFIX};
use mobile_backend::{
    http::{api_routes, routes::RouteSpec},
    rate_limit::policy::Class,
};
use serde_yaml::Value;
use std::collections::BTreeSet;

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

fn spec() -> Value {
    let raw =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    serde_yaml::from_str(&raw).unwrap()
}

/// `{param}` in axum 0.8 and OpenAPI share one syntax, so paths compare as text.
fn spec_operations() -> BTreeSet<(String, String, String)> {
    let spec = spec();
    let paths = spec["paths"].as_mapping().expect("paths");
    let mut ops = BTreeSet::new();
    for (path, item) in paths {
        for m in METHODS {
            if let Some(op) = item.get(*m) {
                let id = op["operationId"]
                    .as_str()
                    .unwrap_or("<missing operationId>");
                ops.insert((
                    m.to_uppercase(),
                    path.as_str().unwrap().to_owned(),
                    id.to_owned(),
                ));
            }
        }
    }
    ops
}

#[tokio::test]
async fn every_route_is_in_the_spec_and_every_spec_path_is_routed() {
    let app = TestApp::spawn().await;
    let routed: BTreeSet<(String, String, String)> = app
        .routes
        .iter()
        .filter(|r| !r.path.starts_with(PROBE_PREFIX))
        .map(|r| {
            (
                r.method.to_string(),
                r.path.to_owned(),
                r.operation_id.to_owned(),
            )
        })
        .collect();
    let documented = spec_operations();
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "routed but not in openapi.yaml: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "in openapi.yaml but not routed: {unrouted:?}"
    );
}

#[tokio::test]
async fn every_documented_operation_answers_and_is_not_the_fallback() {
    let app = TestApp::spawn().await;
    for (method, path, _) in spec_operations() {
        let url = app.url(&path.replace("{id}", &uuid::Uuid::now_v7().to_string()));
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = app
            .client
            .request(method.clone(), url)
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), 405, "{method} {path}");
        if r.status() == 404 {
            let body: serde_json::Value = r.json().await.unwrap();
            assert_ne!(
                body["detail"], "The resource does not exist.",
                "{method} {path} hit the fallback"
            );
        }
    }
}

#[test]
fn the_spec_is_openapi_3_1_with_the_shared_problem_schema() {
    let spec = spec();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"));
    let problem = &spec["components"]["schemas"]["Problem"]["properties"];
    for field in [
        "type",
        "title",
        "status",
        "detail",
        "code",
        "request_id",
        "errors",
    ] {
        assert!(problem.get(field).is_some(), "Problem.{field}");
    }
    assert!(spec["components"]["securitySchemes"]["bearerAuth"].is_mapping());
}

/// Every operation of the spec: (METHOD, path, operation object).
fn operations(spec: &Value) -> Vec<(String, String, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in spec["paths"].as_mapping().expect("paths") {
        for m in METHODS {
            if let Some(op) = item.get(*m) {
                ops.push((m.to_uppercase(), path.as_str().unwrap().to_owned(), op));
            }
        }
    }
    ops
}

fn route<'a>(table: &'a [RouteSpec], method: &str, path: &str) -> Option<&'a RouteSpec> {
    table
        .iter()
        .find(|r| r.method.as_str() == method && r.path == path)
}

/// The `x-rate-limit-class` a route must carry: its class's policy name,
/// or `unlimited`.
fn class_name(class: Option<Class>) -> &'static str {
    class.map_or("unlimited", Class::name)
}

/// Follows `$ref`s (local ones, `#/...`) to the object they name.
fn resolve<'a>(spec: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        let pointer = r.strip_prefix("#/").expect("a local $ref");
        v = pointer.split('/').fold(spec, |node, key| {
            &node[key.replace("~1", "/").replace("~0", "~").as_str()]
        });
        assert!(!v.is_null(), "unresolved $ref {r}");
    }
    v
}

/// Every property name anywhere in `schema`: through `$ref`s, `allOf`,
/// `anyOf`, `oneOf`, nested objects and array items.
fn property_names(spec: &Value, schema: &Value, out: &mut BTreeSet<String>, depth: usize) {
    assert!(depth < 32, "schema nesting too deep (a cycle?)");
    let schema = resolve(spec, schema);
    if let Some(props) = schema.get("properties").and_then(Value::as_mapping) {
        for (name, sub) in props {
            out.insert(name.as_str().unwrap().to_owned());
            property_names(spec, sub, out, depth + 1);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for sub in schema
            .get(key)
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            property_names(spec, sub, out, depth + 1);
        }
    }
    if let Some(items) = schema.get("items") {
        property_names(spec, items, out, depth + 1);
    }
}

#[test]
fn every_operation_states_the_rate_limit_class_of_its_route() {
    let spec = spec();
    let routes = api_routes();
    let mut wrong = Vec::new();
    for (method, path, op) in operations(&spec) {
        let Some(r) = route(routes.table(), &method, &path) else {
            continue; // the both-ways comparison above reports it
        };
        let want = class_name(r.class);
        match op.get("x-rate-limit-class").and_then(Value::as_str) {
            Some(got) if got == want => {}
            Some(got) => wrong.push(format!(
                "{method} {path}: x-rate-limit-class {got}, the route says {want}"
            )),
            None => wrong.push(format!(
                "{method} {path}: no x-rate-limit-class (the route says {want})"
            )),
        }
    }
    assert!(wrong.is_empty(), "\n  {}", wrong.join("\n  "));
}

/// A password or a code in the body makes every request a guess, whoever
/// sends it: such an operation must be limited as one.
#[test]
fn every_operation_whose_body_takes_a_password_or_a_code_is_a_credential_operation() {
    const SECRETS: &[&str] = &[
        "password",
        "current_password",
        "new_password",
        "code",
        "recovery_code",
    ];
    let spec = spec();
    let routes = api_routes();
    let mut checked = BTreeSet::new();
    let mut wrong = Vec::new();
    for (method, path, op) in operations(&spec) {
        let Some(body) = op.get("requestBody").map(|b| resolve(&spec, b)) else {
            continue;
        };
        let mut names = BTreeSet::new();
        for (_, media) in body["content"].as_mapping().expect("requestBody content") {
            property_names(&spec, &media["schema"], &mut names, 0);
        }
        let secrets: Vec<&str> = SECRETS
            .iter()
            .copied()
            .filter(|s| names.contains(*s))
            .collect();
        if secrets.is_empty() {
            continue;
        }
        checked.insert(op["operationId"].as_str().unwrap().to_owned());
        let routed = route(routes.table(), &method, &path).and_then(|r| r.class);
        let stated = op.get("x-rate-limit-class").and_then(Value::as_str);
        if routed != Some(Class::Credentials) || stated != Some("credentials") {
            wrong.push(format!(
                "{method} {path} takes {secrets:?} but is routed as {} and documented as {}",
                class_name(routed),
                stated.unwrap_or("<missing>")
            ));
        }
    }
    assert!(wrong.is_empty(), "\n  {}", wrong.join("\n  "));
    // The walk must find them (a broken walk would pass vacuously).
    for op in [
        "register",
        "verify_email",
        "login",
        "complete_mfa",
        "reset_password",
        "change_password",
        "request_email_change",
        "confirm_email_change",
        "delete_me",
        "setup_totp",
        "confirm_totp",
        "disable_totp",
        "regenerate_recovery_codes",
    ] {
        assert!(checked.contains(op), "{op} was not found to take a secret");
    }
}

/// Apps send these on every `/v1` request (docs/mobile.md, *Client
/// headers*), so every `/v1` operation says what each one means.
#[test]
fn every_operation_declares_the_client_headers_it_may_send() {
    let spec = spec();
    let mut missing = Vec::new();
    for (method, path, op) in operations(&spec) {
        let declared: BTreeSet<&str> = op
            .get("parameters")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(|p| resolve(&spec, p)["name"].as_str())
            .collect();
        let wanted: &[&str] = if path.starts_with("/v1/") {
            &[
                "X-Request-Id",
                "X-Client-Platform",
                "X-Client-Version",
                "X-App-Install-Id",
            ]
        } else {
            &["X-Request-Id"]
        };
        for h in wanted {
            if !declared.contains(h) {
                missing.push(format!("{method} {path}: {h}"));
            }
        }
    }
    assert!(missing.is_empty(), "\n  {}", missing.join("\n  "));
}

#[test]
fn every_ref_names_a_component_not_a_property_inside_one() {
    let raw =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap();
    let inside: Vec<&str> = raw
        .lines()
        .filter(|l| l.contains("$ref") && l.contains("/properties/"))
        .collect();
    assert!(
        inside.is_empty(),
        "make these named component schemas:\n{}",
        inside.join("\n")
    );
}
