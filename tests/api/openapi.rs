//! `openapi.yaml` and the router agree exactly: every routed operation is
//! documented with the handler's name as its operationId, and the spec
//! documents nothing the router lacks.

use crate::helpers::{TestApp, PROBE_PREFIX};
use std::collections::BTreeSet;

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

fn spec() -> serde_yaml::Value {
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
