//! Outbound HTTP (the alert webhook, the Pwned Passwords range API): one
//! client policy and a bounded body reader.
//!
//! Threats: a receiver (or whoever controls its DNS or a proxy in front of
//! it) answering with a redirect to an internal address (server-side
//! request forgery through us), or with an endless or huge body to tie up
//! memory and a worker. Controls: redirects are never followed (a 3xx is
//! just an unsuccessful answer), and bodies are read chunk by chunk up to a
//! cap; a declared `Content-Length` over the cap is refused before reading
//! anything, and a body that grows past it is dropped mid-stream, which
//! closes the connection.

use std::time::Duration;

/// Why a response body was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("response body over {cap} bytes")]
    TooLarge { cap: usize },
    #[error("reading the response body: {0}")]
    Read(#[from] reqwest::Error),
}

/// A client that never follows redirects, with a total timeout and our
/// user agent.
pub fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .user_agent(concat!("mobile-backend/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Reads at most `cap` bytes of `response`'s body; more is an error, and
/// the rest is never read.
pub async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|declared| declared > cap as u64)
    {
        return Err(BodyError::TooLarge { cap });
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > cap {
            return Err(BodyError::TooLarge { cap });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
