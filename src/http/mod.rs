//! HTTP/1.1 on the reactor, shared by every process that serves HTTP.
//!
//! The layers, from the wire in:
//!
//! - [`request`]: cuts requests out of a byte buffer with [`httparse`]
//!   (incomplete input is a normal result), `Content-Length` bodies only, each
//!   limit with its status (400, 413, 431, 501).
//! - [`response`]: whole replies with `Content-Length`, streamed ones in
//!   chunked coding, JSON error bodies.
//! - [`front`]: a listener's connections in raw mode: keep-alive, pipelining
//!   with replies in request order (given at once or later), `Connection:
//!   close`, and a refused request answered and closed.
//! - [`route`]: which of a service's endpoints a request is for (404, 405 with
//!   `Allow`).
//! - [`json`]: the JSON bodies of the key-value endpoints (seed 002's shapes),
//!   as pure types.
//! - [`metrics`]: the Prometheus text exposition format.
//!
//! A service with an HTTP listener owns a [`Front`]; it passes the listener's
//! `Accepted`, `Data`, `Eof` and `Closed` inputs to it, takes requests with
//! [`Front::next`] and answers each with [`Front::respond`] or a stream.

pub mod front;
pub mod json;
pub mod metrics;
pub mod request;
pub mod response;

pub use front::{Front, RequestId};
pub use request::Request;
pub use response::Response;

/// Bounds on what one HTTP connection may send.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request head (request line and headers), in bytes.
    pub max_head: usize,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Most requests waiting for replies on one connection.
    pub max_pipeline: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_head: 16 << 10,
            max_body: crate::protocol::DEFAULT_MAX_PAYLOAD as usize,
            max_pipeline: 64,
        }
    }
}

/// Finds the endpoint for `req` among `(path, methods)` pairs: its index, or
/// the reply to send instead (404 for an unknown path, 405 with `Allow` for a
/// method the path does not take). `HEAD` goes wherever `GET` does.
pub fn route(req: &Request, endpoints: &[(&str, &[&str])]) -> Result<usize, Response> {
    let Some(i) = endpoints.iter().position(|(p, _)| *p == req.path) else {
        return Err(Response::not_found(&req.path));
    };
    let methods = endpoints[i].1;
    let method = if req.method == "HEAD" && !methods.contains(&"HEAD") {
        "GET"
    } else {
        req.method.as_str()
    };
    if methods.contains(&method) {
        return Ok(i);
    }
    let mut allow: Vec<&str> = methods.to_vec();
    if allow.contains(&"GET") && !allow.contains(&"HEAD") {
        allow.push("HEAD");
    }
    Err(Response::method_not_allowed(&req.method, &req.path, &allow))
}

#[cfg(test)]
mod tests;
