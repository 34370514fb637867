//! The service's own limits on the request head (`MAX_URI_BYTES`,
//! `MAX_HEADER_BYTES`), enforced in the router so that refusals are
//! problem+json with a request id and the security headers, and what hyper
//! still answers by itself (a head far beyond those limits, bytes that are
//! not HTTP). Sent over raw TCP: an HTTP client library would refuse to
//! send some of these requests, or would hide how the connection ended.

use crate::helpers::TestApp;
use serde_json::Value;
use std::time::Duration;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// What came back on a raw connection.
#[derive(Debug)]
enum Outcome {
    /// A response: status, lower-cased headers, body.
    Answered(u16, Vec<(String, String)>, Vec<u8>),
    /// Closed or reset without a byte of response.
    Closed,
}

impl Outcome {
    fn status(&self) -> Option<u16> {
        match self {
            Self::Answered(status, ..) => Some(*status),
            Self::Closed => None,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        match self {
            Self::Answered(_, headers, _) => headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str()),
            Self::Closed => None,
        }
    }

    fn problem(&self) -> Value {
        match self {
            Self::Answered(_, _, body) => serde_json::from_slice(body).unwrap(),
            Self::Closed => panic!("no response"),
        }
    }
}

/// Sends `request` as is, then reads until the server closes (every request
/// here asks for `Connection: close`, and hyper closes after its own
/// refusals). Write errors are ignored: the server may answer and close
/// before reading everything.
async fn send_raw(app: &TestApp, request: &[u8]) -> Outcome {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let _ = stream.write_all(request).await;
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        // A bound against a hang, not an assertion on speed.
        match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server neither answered nor closed"),
        }
    }
    parse(&received)
}

fn parse(received: &[u8]) -> Outcome {
    if received.is_empty() {
        return Outcome::Closed;
    }
    let end = received
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8(received[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    Outcome::Answered(
        status.parse().unwrap(),
        headers,
        received[end + 4..].to_vec(),
    )
}

/// A GET of `target` with `headers` (after `Host`), asking to close.
fn request(target: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut r = format!("GET {target} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    for (n, v) in headers {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// The size of a header list as the service counts it: name + value + 32
/// per field.
fn counted(headers: &[(String, String)]) -> usize {
    headers.iter().map(|(n, v)| n.len() + v.len() + 32).sum()
}

/// Filler headers that, with the `host` and `connection` fields `request`
/// adds, total exactly `total` bytes as the service counts them.
fn headers_totalling(total: usize) -> Vec<(String, String)> {
    let fixed = vec![
        ("host".to_owned(), "localhost".to_owned()),
        ("connection".to_owned(), "close".to_owned()),
    ];
    let mut filler: Vec<(String, String)> = Vec::new();
    loop {
        let used = counted(&fixed) + counted(&filler);
        let name = format!("x-fill-{}", filler.len());
        let room = total - used;
        if room <= name.len() + 32 + 1000 {
            filler.push((name.clone(), "v".repeat(room - name.len() - 32)));
            break;
        }
        filler.push((name, "v".repeat(1000)));
    }
    assert_eq!(counted(&fixed) + counted(&filler), total);
    filler
}

/// The refusal is the service's own: problem+json with the request id and
/// the security headers, like any other error.
fn assert_problem(outcome: &Outcome, status: u16, code: &str) {
    assert_eq!(outcome.status(), Some(status), "{outcome:?}");
    assert_eq!(
        outcome.header("content-type"),
        Some("application/problem+json")
    );
    let id = outcome.header("x-request-id").expect("a request id");
    assert_eq!(outcome.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(outcome.header("referrer-policy"), Some("no-referrer"));
    assert!(outcome.header("content-security-policy").is_some());
    assert_eq!(outcome.header("cache-control"), Some("no-store"));
    let problem = outcome.problem();
    assert_eq!(problem["status"], status);
    assert_eq!(problem["code"], code);
    assert_eq!(problem["request_id"], id);
}

fn target_of(len: usize) -> String {
    let prefix = "/healthz?q=";
    format!("{prefix}{}", "a".repeat(len - prefix.len()))
}

#[tokio::test]
async fn a_request_target_over_max_uri_bytes_is_a_problem_json_414_and_one_at_the_limit_is_served()
{
    let app = TestApp::spawn().await;
    let over = send_raw(&app, &request(&target_of(8 * 1024 + 1), &[])).await;
    assert_problem(&over, 414, "uri_too_long");
    let at = send_raw(&app, &request(&target_of(8 * 1024), &[])).await;
    assert_eq!(at.status(), Some(200), "{at:?}");

    // Up to hyper's buffer (twice the limits plus 16 KiB), the refusal
    // is still the service's.
    let far = send_raw(&app, &request(&target_of(60 * 1024), &[])).await;
    assert_problem(&far, 414, "uri_too_long");

    // The limit is configurable.
    let app = TestApp::builder()
        .env("MAX_URI_BYTES", "2048")
        .spawn()
        .await;
    let over = send_raw(&app, &request(&target_of(2049), &[])).await;
    assert_problem(&over, 414, "uri_too_long");
    let at = send_raw(&app, &request(&target_of(2048), &[])).await;
    assert_eq!(at.status(), Some(200), "{at:?}");
}

#[tokio::test]
async fn headers_over_max_header_bytes_are_a_problem_json_431_and_headers_at_the_limit_are_served()
{
    let app = TestApp::spawn().await;
    let over = send_raw(
        &app,
        &request("/healthz", &headers_totalling(32 * 1024 + 1)),
    )
    .await;
    assert_problem(&over, 431, "headers_too_large");
    // 40 KiB, which hyper's defaults let through, is refused the same way.
    let forty = send_raw(&app, &request("/healthz", &headers_totalling(40 * 1024))).await;
    assert_problem(&forty, 431, "headers_too_large");
    let at = send_raw(&app, &request("/healthz", &headers_totalling(32 * 1024))).await;
    assert_eq!(at.status(), Some(200), "{at:?}");
    // Many small fields count too (32 bytes each on top of name and value):
    // 800 fields of 6 bytes are within the limit, 900 are over it.
    let small = |n: usize| -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("x{i:04}"), "v".to_owned()))
            .collect()
    };
    let many = send_raw(&app, &request("/healthz", &small(800))).await;
    assert_eq!(many.status(), Some(200), "{many:?}");
    let too_many = send_raw(&app, &request("/healthz", &small(900))).await;
    assert_problem(&too_many, 431, "headers_too_large");
}

/// What hyper answers by itself, without the router: a request head far
/// beyond the service's limits (over hyper's read buffer, twice the limits
/// plus 16 KiB) or with more fields than a request within `MAX_HEADER_BYTES`
/// can have, and bytes that do not parse as HTTP/1.1. These answers are
/// bare (no body, no request id, no security headers), then hyper closes
/// the connection; they are refused either way.
#[tokio::test]
async fn hyper_refuses_heads_far_beyond_the_limits_and_non_http_bytes_with_a_bare_answer() {
    let app = TestApp::spawn().await;
    let bare = |outcome: &Outcome, status: u16| {
        // hyper answers before it has read everything sent, so the close
        // may reach the client as a reset before the answer is read.
        if let Outcome::Answered(s, _, body) = outcome {
            assert_eq!(*s, status, "{outcome:?}");
            assert!(body.is_empty(), "{outcome:?}");
            assert!(outcome.header("x-request-id").is_none(), "{outcome:?}");
            assert!(outcome.header("content-type").is_none(), "{outcome:?}");
        }
    };

    // 200 KiB of headers: over hyper's 96 KiB buffer.
    let huge = send_raw(&app, &request("/healthz", &headers_totalling(200 * 1024))).await;
    bare(&huge, 431);
    // More fields than hyper's header count limit (32 KiB / 32 + 1).
    let fields: Vec<(String, String)> = (0..1100)
        .map(|i| (format!("x{i}"), String::new()))
        .collect();
    let many = send_raw(&app, &request("/healthz", &fields)).await;
    bare(&many, 431);
    // A target over hyper's 96 KiB buffer: 431 when the head is still
    // incomplete at the buffer's end; 414 if a last read went past it and
    // hyper parsed a complete head with a target over its own 65,534 bytes.
    let long = send_raw(&app, &request(&target_of(200 * 1024), &[])).await;
    if let Some(status) = long.status() {
        assert!(status == 431 || status == 414, "{long:?}");
        bare(&long, status);
    }

    // A malformed header line, and bytes that are not HTTP at all (a TLS
    // ClientHello sent to the plain listener): a bare 400, then close.
    let malformed = send_raw(
        &app,
        b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nno colon here\r\n\r\n",
    )
    .await;
    assert_eq!(malformed.status(), Some(400), "{malformed:?}");
    bare(&malformed, 400);
    let tls_hello = send_raw(
        &app,
        &[
            0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03,
        ],
    )
    .await;
    assert_eq!(tls_hello.status(), Some(400), "{tls_hello:?}");
    bare(&tls_hello, 400);
}

/// The same limits over HTTP/2 (prior knowledge on the plain listener):
/// hyper's HTTP/2 header list limit sits above ours too, so the refusals
/// are the service's problem+json; a header block beyond that limit is
/// refused by the h2 library.
#[tokio::test]
async fn over_http2_the_limits_answer_problem_json_too() {
    let app = TestApp::spawn().await;
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let send = |path: String, fields: Vec<(String, String)>| {
        let client = client.clone();
        async move {
            let mut request = http::Request::get(format!("http://localhost{path}"));
            for (n, v) in fields {
                request = request.header(n, v);
            }
            let (response, _) = client
                .ready()
                .await
                .unwrap()
                .send_request(request.body(()).unwrap(), true)
                .unwrap();
            let response = response.await?;
            let (parts, mut body) = response.into_parts();
            let mut bytes = Vec::new();
            while let Some(chunk) = body.data().await {
                bytes.extend_from_slice(&chunk?);
            }
            Ok::<_, h2::Error>((parts, bytes))
        }
    };
    let problem_of = |(parts, body): &(http::response::Parts, Vec<u8>), status: u16, code: &str| {
        assert_eq!(parts.status, status);
        assert_eq!(parts.headers["content-type"], "application/problem+json");
        assert_eq!(parts.headers["x-content-type-options"], "nosniff");
        let problem: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(problem["code"], code);
        assert_eq!(
            problem["request_id"],
            parts.headers["x-request-id"].to_str().unwrap()
        );
    };

    let over = send(target_of(8 * 1024 + 1), vec![]).await.unwrap();
    problem_of(&over, 414, "uri_too_long");
    // 40 KiB of headers: over ours, within hyper's HTTP/2 header list size.
    let forty = send("/healthz".into(), headers_totalling(40 * 1024))
        .await
        .unwrap();
    problem_of(&forty, 431, "headers_too_large");
    let ok = send("/healthz".into(), headers_totalling(16 * 1024))
        .await
        .unwrap();
    assert_eq!(ok.0.status, 200);
    // Far beyond (200 KiB, over hyper's HTTP/2 header list size and the
    // number of CONTINUATION frames the h2 library accepts for it): h2 ends
    // the whole connection with GOAWAY ENHANCE_YOUR_CALM
    // (`too_many_continuations`), no answer at all.
    let far = send("/healthz".into(), headers_totalling(200 * 1024)).await;
    let e = far.expect_err("no answer to a 200 KiB header block");
    assert!(e.is_go_away(), "{e}");
    assert_eq!(e.reason(), Some(h2::Reason::ENHANCE_YOUR_CALM), "{e}");
}
