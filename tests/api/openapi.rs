//! `openapi.yaml` and the router agree exactly: every routed operation is
//! documented with the handler's name as its operationId and its route's
//! rate-limit class as `x-rate-limit-class`, and the spec documents nothing
//! the router lacks. The rule a forker cannot forget: an operation whose
//! body carries a password or a code is a `credentials` operation.
//! And the rules of form that keep the spec usable by client generators
//! (scripts/contract runs the generators themselves): every `/v1`
//! operation declares the client headers, each as a `$ref` to its shared
//! parameter; a `$ref` names a component, never a property inside one; no
//! boolean `const`; every multi-shape answer has a discriminator its shapes
//! send; and `Problem.code` lists exactly the codes the source answers.

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
    // The same on the parsed spec, whatever the YAML spelling, and every
    // `$ref` names a component directly (`#/components/<kind>/<name>`).
    let spec = spec();
    let mut nodes = Vec::new();
    walk(&spec, "#".into(), &mut nodes);
    let deep: Vec<String> = nodes
        .iter()
        .filter_map(|(at, m)| Some((at, m.get("$ref")?.as_str()?)))
        .filter(|(_, r)| !(r.starts_with("#/components/") && r.split('/').count() == 4))
        .map(|(at, r)| format!("{at}: {r}"))
        .collect();
    assert!(deep.is_empty(), "\n  {}", deep.join("\n  "));
}

/// Every mapping in the spec, with its JSON-pointer-ish location.
fn walk<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a serde_yaml::Mapping)>) {
    match v {
        Value::Mapping(m) => {
            out.push((at.clone(), m));
            for (k, sub) in m {
                let key = k.as_str().map_or_else(|| format!("{k:?}"), str::to_owned);
                walk(sub, format!("{at}/{key}"), out);
            }
        }
        Value::Sequence(s) => {
            for (i, sub) in s.iter().enumerate() {
                walk(sub, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Client generators turn a boolean `const` into a one-case enum backed by
/// a Bool, which Swift does not allow; and a link's `requestBody` map is
/// refused by openapi-generator's parser (scripts/contract).
#[test]
fn no_boolean_const_and_no_link_request_body_map() {
    let spec = spec();
    let mut nodes = Vec::new();
    walk(&spec, "#".into(), &mut nodes);
    let mut wrong = Vec::new();
    for (at, m) in &nodes {
        if let Some(Value::Bool(b)) = m.get("const") {
            wrong.push(format!("{at}: const: {b}"));
        }
        if at.contains("/links/") && m.get("operationId").is_some() {
            if let Some(body) = m.get("requestBody") {
                if !body.is_string() {
                    wrong.push(format!("{at}: requestBody is not one expression"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "\n  {}", wrong.join("\n  "));
    // The walk sees the spec (a broken walk would pass vacuously).
    assert!(nodes.len() > 1000, "{} mappings", nodes.len());
}

/// A schema that is one of several named shapes says which by a
/// discriminator the server sends: generated clients decode by it (the
/// Kotlin generator otherwise merges the shapes into one class with every
/// member required, and no answer parses).
#[test]
fn every_multi_shape_schema_has_a_discriminator_each_shape_sends() {
    let spec = spec();
    let mut nodes = Vec::new();
    walk(&spec, "#".into(), &mut nodes);
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (at, m) in &nodes {
        let Some(shapes) = m.get("oneOf").and_then(Value::as_sequence) else {
            continue;
        };
        let refs: Vec<&str> = shapes
            .iter()
            .filter_map(|s| s.get("$ref").and_then(Value::as_str))
            .collect();
        // `oneOf: [X, null]` and `oneOf: [{required: [a]}, …]` are one shape.
        if refs.len() < 2 || refs.len() != shapes.len() {
            continue;
        }
        checked += 1;
        let disc = &m.get("discriminator").cloned().unwrap_or(Value::Null);
        let Some(prop) = disc["propertyName"].as_str() else {
            wrong.push(format!("{at}: no discriminator.propertyName"));
            continue;
        };
        let mapping = disc["mapping"].as_mapping().cloned().unwrap_or_default();
        let mapped: BTreeSet<&str> = mapping.values().filter_map(Value::as_str).collect();
        if mapped != refs.iter().copied().collect() {
            wrong.push(format!(
                "{at}: mapping {mapped:?} is not the shapes {refs:?}"
            ));
        }
        for (value, target) in &mapping {
            let (Some(value), Some(target)) = (value.as_str(), target.as_str()) else {
                wrong.push(format!("{at}: a mapping entry is not a string"));
                continue;
            };
            let target_ref = spec_ref(target);
            let shape = resolve(&spec, &target_ref);
            let required = shape["required"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|r| r.as_str() == Some(prop));
            let allowed: Vec<&str> = shape["properties"][prop]["enum"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if !required || allowed != [value] {
                wrong.push(format!(
                    "{at}: {target} must require `{prop}` with the one value `{value}` (required: {required}, enum: {allowed:?})"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "\n  {}", wrong.join("\n  "));
    assert!(checked >= 1, "LoginResponse was not found");
}

fn spec_ref(target: &str) -> Value {
    let mut m = serde_yaml::Mapping::new();
    m.insert("$ref".into(), target.into());
    Value::Mapping(m)
}

/// The client headers are one shared parameter each, so a generated
/// client has one `X-Client-Platform` type rather than one per operation,
/// and the platform's values are one named schema.
#[test]
fn every_client_header_is_a_ref_to_its_shared_parameter() {
    const SHARED: &[(&str, &str)] = &[
        ("X-Request-Id", "#/components/parameters/XRequestId"),
        (
            "X-Client-Platform",
            "#/components/parameters/XClientPlatform",
        ),
        ("X-Client-Version", "#/components/parameters/XClientVersion"),
        ("X-App-Install-Id", "#/components/parameters/XAppInstallId"),
    ];
    let spec = spec();
    let mut wrong = Vec::new();
    let mut seen = 0;
    for (method, path, op) in operations(&spec) {
        for p in op
            .get("parameters")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let name = resolve(&spec, p)["name"].as_str().unwrap_or_default();
            let Some((_, want)) = SHARED.iter().find(|(h, _)| h.eq_ignore_ascii_case(name)) else {
                continue;
            };
            seen += 1;
            if p.get("$ref").and_then(Value::as_str) != Some(*want) {
                wrong.push(format!("{method} {path}: {name} is not $ref {want}"));
            }
        }
    }
    assert!(wrong.is_empty(), "\n  {}", wrong.join("\n  "));
    assert!(seen > 100, "only {seen} client header parameters found");
    // No shared parameter carries an inline enum: generators would make one
    // enum type per operation from it.
    for (name, param) in spec["components"]["parameters"]
        .as_mapping()
        .expect("components.parameters")
    {
        assert!(
            param["schema"].get("enum").is_none(),
            "components.parameters.{}: make the enum a named schema",
            name.as_str().unwrap()
        );
    }
    assert_eq!(
        spec["components"]["parameters"]["XClientPlatform"]["schema"]["$ref"],
        "#/components/schemas/ClientPlatform"
    );
}

/// Every Problem `code` the server can answer, read from the source: the
/// `code: "…",` of an `ApiError` variant (a field error's code is
/// `"…".into()`, a `String`), the first argument of
/// `ApiError::bad_request("…", …)`, and the arms of every
/// `fn code(self|&self) -> &'static str` (`ApiError::code`,
/// `RefreshFailure::code`).
fn problem_codes_in_source() -> BTreeSet<String> {
    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    /// The snake_case literal at the start of `s` (after its opening quote).
    fn literal(s: &str) -> Option<&str> {
        let s = s.strip_prefix('"')?;
        let end = s.find('"')?;
        let word = &s[..end];
        let snake = !word.is_empty()
            && word.starts_with(|c: char| c.is_ascii_lowercase())
            && word
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        snake.then_some(word)
    }
    let mut files = Vec::new();
    rust_files(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut files,
    );
    let mut codes = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, _) in text.match_indices("code: \"") {
            let rest = &text[i + "code: ".len()..];
            if let Some(word) = literal(rest) {
                // `code: "x",` is a `&'static str` problem code; a field
                // error's is `code: "x".into(),`.
                if rest[word.len() + 2..].starts_with(',') {
                    codes.insert(word.to_owned());
                }
            }
        }
        for (i, _) in text.match_indices("bad_request(") {
            let rest = text[i + "bad_request(".len()..].trim_start();
            if let Some(word) = literal(rest) {
                codes.insert(word.to_owned());
            }
        }
        for (i, _) in text.match_indices("fn code(") {
            let rest = &text[i..];
            if !rest.lines().next().unwrap().contains("-> &'static str") {
                continue;
            }
            // The body ends at the first line that closes the fn (4 spaces).
            let body = &rest[..rest.find("\n    }\n").unwrap_or(rest.len())];
            for (j, _) in body.match_indices("=> \"") {
                if let Some(word) = literal(&body[j + "=> ".len()..]) {
                    codes.insert(word.to_owned());
                }
            }
        }
    }
    codes
}

/// `Problem.code` lists every code the server can answer, and nothing
/// else, so clients generated from the spec know them all (an unknown one
/// is still legal: the enum is open, see its description).
#[test]
fn the_problem_code_enum_is_exactly_the_codes_the_source_answers() {
    let spec = spec();
    let code = resolve(
        &spec,
        &spec["components"]["schemas"]["Problem"]["properties"]["code"],
    );
    let listed: BTreeSet<String> = code["enum"]
        .as_sequence()
        .expect("Problem.code has an enum")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let emitted = problem_codes_in_source();
    // The scan finds each way of answering a code (a broken scan would pass
    // vacuously): a variant's fixed code, a literal, bad_request, a refresh
    // failure.
    for known in [
        "not_found",
        "invalid_credentials",
        "invalid_install_id",
        "refresh_token_reused",
        "email_not_verified",
    ] {
        assert!(emitted.contains(known), "the scan missed {known}");
    }
    let missing: Vec<_> = emitted.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&emitted).collect();
    assert!(
        missing.is_empty(),
        "codes the server answers that Problem.code does not list: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "Problem.code lists codes nothing in src answers: {stale:?}"
    );
    assert!(
        code["description"]
            .as_str()
            .unwrap_or_default()
            .contains("open enum"),
        "Problem.code must say it is open to additions"
    );
    // The 426 problem keeps its one code, from the same list.
    let upgrade = &spec["components"]["schemas"]["ClientUpgradeRequired"]["properties"]["code"];
    assert!(listed.contains(upgrade["const"].as_str().unwrap()));
}
