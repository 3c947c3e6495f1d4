//! A status sink that POSTs each message to a site server over HTTP(S) (feature `http`).

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
use ureq::http::header::{CONTENT_TYPE, DATE, LOCATION, RETRY_AFTER};
use ureq::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};

use crate::core::effect::StatusMessage;
use crate::report::delivery::{Answers, StatusSink};

/// How many bytes of a response body are read at most (the rest is not read, and the connection
/// is not reused).
const BODY_LIMIT: u64 = 64 * 1024;

/// How many bytes of a refusal's body go into the reason kept with the message.
const EXCERPT: usize = 200;

/// The name of the header that carries a message's idempotency key.
const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// How an [`HttpSink`] connects: timeouts, extra headers, user agent.
///
/// ```
/// use std::time::Duration;
/// use jobstate::report::HttpSinkOptions;
/// let options = HttpSinkOptions::default()
///     .with_connect_timeout(Duration::from_secs(5))
///     .with_header("Authorization", "Bearer 0123456789abcdef");
/// assert_eq!(options.request_timeout, Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpSinkOptions {
    /// The longest wait to resolve the host and set up the connection (TLS included). Default:
    /// 10 s.
    pub connect_timeout: Duration,
    /// The longest a whole request may take, from connecting to the last byte of the answer.
    /// Default: 30 s.
    pub request_timeout: Duration,
    /// Headers sent with every request (an `Authorization`, a site identifier), after the
    /// sink's own; a `Content-Type` or `Idempotency-Key` given here is sent in addition to the
    /// sink's, which comes first.
    pub headers: Vec<(String, String)>,
    /// The `User-Agent` header. Default: `jobstate/<version>`.
    pub user_agent: String,
}

impl Default for HttpSinkOptions {
    /// Connect within 10 s, whole requests within 30 s, no extra headers, `User-Agent:
    /// jobstate/<version>`.
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            headers: Vec::new(),
            user_agent: concat!("jobstate/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

impl HttpSinkOptions {
    /// Sets [`connect_timeout`](HttpSinkOptions::connect_timeout).
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`request_timeout`](HttpSinkOptions::request_timeout).
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Adds a header sent with every request.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets [`user_agent`](HttpSinkOptions::user_agent).
    #[must_use]
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }
}

/// Why an [`HttpSink`] could not be built, or could not reach its server.
///
/// Construction errors ([`InvalidUrl`](HttpSinkError::InvalidUrl),
/// [`InvalidHeader`](HttpSinkError::InvalidHeader)) come from [`HttpSink::new`]; the others are
/// what [`HttpSink::deliver`](StatusSink::deliver) returns when the server could not be reached
/// or did not speak HTTP: the ledger then pauses the whole sink for a back-off, and the messages
/// not answered stay in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpSinkError {
    /// The URL given is not an absolute `http://` or `https://` URL with a host.
    #[error(
        "the status URL {url:?} is not usable: {reason}; give an absolute http:// or https:// URL \
         with a host, such as https://site.example/agent/status"
    )]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An extra header (or the user agent) is not a valid HTTP header.
    #[error(
        "the header {name:?} cannot be sent: {reason}; use a header name of letters, digits and \
         dashes, and a value without control characters"
    )]
    InvalidHeader {
        /// The header's name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection could be set up: refused, no route, or the host name did not resolve.
    #[error(
        "cannot reach the status server at {url}: {detail}; check that the server runs and that \
         the URL, DNS and firewall are right (the messages stay in the outbox and are offered \
         again after a back-off)"
    )]
    Unreachable {
        /// The sink's URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// The server did not answer within a timeout of [`HttpSinkOptions`]. It may have stored the
    /// message: it is sent again later, and the server drops the copy by its key.
    #[error(
        "the status server at {url} did not answer in time ({detail}); the message is sent again \
         after a back-off: if the server is slow, raise HttpSinkOptions::request_timeout"
    )]
    Timeout {
        /// The sink's URL.
        url: String,
        /// Which timeout ran out.
        detail: String,
    },
    /// The connection broke before a whole answer came (closed, reset). The server may have
    /// stored the message: it is sent again later, and the server drops the copy by its key.
    #[error(
        "the connection to the status server at {url} broke before it answered: {detail}; the \
         message is sent again after a back-off"
    )]
    ConnectionLost {
        /// The sink's URL.
        url: String,
        /// What happened.
        detail: String,
    },
    /// What came back is not an HTTP response (another protocol on that port, a broken proxy).
    #[error(
        "the server at {url} did not answer in HTTP: {detail}; check that the URL names the status \
         server's HTTP(S) port and that no proxy in between mangles the answer"
    )]
    NotHttp {
        /// The sink's URL.
        url: String,
        /// What was wrong with the answer.
        detail: String,
    },
    /// TLS could not be set up: a certificate not signed by a root the sink trusts, a name
    /// mismatch, an expired certificate.
    #[error(
        "TLS with the status server at {url} failed: {detail}; the sink trusts only the Mozilla \
         root certificates compiled into it (webpki-roots): give the server a certificate chain \
         to one of them for this host name"
    )]
    Tls {
        /// The sink's URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// Any other failure of the HTTP client.
    #[error("sending to the status server at {url} failed: {detail}")]
    Other {
        /// The sink's URL.
        url: String,
        /// What failed.
        detail: String,
    },
}

/// The request body: the key beside the message.
#[derive(Serialize)]
struct Envelope<'a> {
    idempotency_key: &'a str,
    message: &'a StatusMessage,
}

/// Delivers status messages to a site server over HTTP(S): one `POST` per message, answered
/// per message from the response's status.
///
/// # Wire format
///
/// Each message is one `POST` to the configured URL, with the headers `Content-Type:
/// application/json` and `Idempotency-Key: <key>` (the [`StatusKey`](crate::StatusKey)'s
/// `Display` string, for example `os-upgrade/run 1/attempt 1/Completed`; a job id outside ASCII
/// is sent as its UTF-8 bytes), and the body
///
/// ```json
/// {"idempotency_key": "<key>", "message": { ...the StatusMessage as serde serializes it... }}
/// ```
///
/// Delivery is at least once: the server must store a key once and answer 2xx to its copies.
///
/// # Answers
///
/// | The server answers                     | The message                                        |
/// |----------------------------------------|----------------------------------------------------|
/// | 2xx                                    | accepted: it leaves the outbox                     |
/// | 429 or 503                             | not answered; the sink pauses (for `Retry-After`, in seconds or as an HTTP date read against the response's `Date`, if given) and the batch stops |
/// | other 5xx                              | retried after its back-off; the batch goes on      |
/// | other 4xx                              | rejected: moved to the dead letters                |
/// | 1xx, 3xx (redirects are not followed)  | retried after its back-off                         |
/// | no connection, a timeout, not HTTP     | not answered; `Err`, so the ledger pauses the sink |
///
/// The reason kept for a retry or a rejection reads `HTTP 500 Internal Server Error: <the first
/// 200 bytes of the body>`.
///
/// # Timeouts and TLS
///
/// Connecting (DNS and TLS included) may take [`connect_timeout`](HttpSinkOptions::connect_timeout)
/// (10 s by default), a whole request [`request_timeout`](HttpSinkOptions::request_timeout)
/// (30 s). Connections are kept alive and reused between messages. `https://` URLs are checked
/// against the Mozilla root certificates compiled into the binary (the `webpki-roots` crate),
/// never the system's store: a server with a certificate from a private CA is refused. The
/// client is [`ureq`](https://docs.rs/ureq) (blocking: no async runtime).
///
/// ```no_run
/// use std::time::Duration;
/// use jobstate::report::{HttpSink, HttpSinkOptions};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let mut ledger: jobstate::Ledger<jobstate::MemoryStore, jobstate::session::SessionFacts> = todo!();
/// let options = HttpSinkOptions::default()
///     .with_request_timeout(Duration::from_secs(15))
///     .with_header("Authorization", "Bearer 0123456789abcdef");
/// let mut sink = HttpSink::new_with("https://site.example/agent/status", options)?;
/// let delivery = ledger.deliver(&mut sink)?;
/// if let Some(error) = &delivery.failure {
///     eprintln!("status server unreachable, retrying later: {error}");
/// }
/// # Ok(()) }
/// ```
pub struct HttpSink {
    agent: ureq::Agent,
    url: String,
    headers: HeaderMap,
}

impl std::fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSink")
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl HttpSink {
    /// A sink that posts to `url` with the default options.
    ///
    /// # Errors
    ///
    /// [`HttpSinkError::InvalidUrl`] if `url` is not an absolute `http://` or `https://` URL
    /// with a host.
    pub fn new(url: &str) -> Result<Self, HttpSinkError> {
        Self::new_with(url, HttpSinkOptions::default())
    }

    /// A sink that posts to `url` with `options`.
    ///
    /// # Errors
    ///
    /// [`HttpSinkError::InvalidUrl`] if `url` is not an absolute `http://` or `https://` URL
    /// with a host; [`HttpSinkError::InvalidHeader`] if an extra header or the user agent is
    /// not a valid HTTP header.
    pub fn new_with(url: &str, options: HttpSinkOptions) -> Result<Self, HttpSinkError> {
        check_url(url)?;
        let mut headers = HeaderMap::new();
        for (name, value) in &options.headers {
            let invalid = |reason: String| HttpSinkError::InvalidHeader {
                name: name.clone(),
                reason,
            };
            let header_name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| invalid(format!("bad name: {e}")))?;
            let header_value =
                HeaderValue::from_str(value).map_err(|e| invalid(format!("bad value: {e}")))?;
            headers.append(header_name, header_value);
        }
        if let Err(e) = HeaderValue::from_str(&options.user_agent) {
            return Err(HttpSinkError::InvalidHeader {
                name: "User-Agent".into(),
                reason: format!("bad value: {e}"),
            });
        }
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(options.connect_timeout))
            .timeout_global(Some(options.request_timeout))
            // A 4xx or 5xx is an answer, not an error: its status decides the message's fate.
            .http_status_as_error(false)
            // A redirect is answered as a retry, not followed (0: the 3xx response comes back).
            .max_redirects(0)
            .user_agent(options.user_agent.as_str())
            .build()
            .new_agent();
        Ok(Self {
            agent,
            url: url.to_string(),
            headers,
        })
    }

    /// The URL messages are posted to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Posts one message; `Ok` with the status, the headers that matter and the start of the
    /// body, or the transport error.
    fn post(&self, key: &str, body: &[u8]) -> Result<Reply, HttpSinkError> {
        let mut request = self.agent.post(&self.url);
        if let Some(headers) = request.headers_mut() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            // `from_bytes` takes a non-ASCII job id's UTF-8 bytes (job ids have no control
            // characters, so it does not fail; if it did, the request would go without it and
            // the key in the body still counts).
            if let Ok(value) = HeaderValue::from_bytes(key.as_bytes()) {
                headers.insert(HeaderName::from_static(IDEMPOTENCY_KEY), value);
            }
            for (name, value) in &self.headers {
                headers.append(name.clone(), value.clone());
            }
        }
        let mut response = request.send(body).map_err(|e| self.transport(e))?;
        let status = response.status();
        let header = |name: HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let retry_after = header(RETRY_AFTER);
        let date = header(DATE);
        let location = header(LOCATION);
        // Read the body (bounded) so that the connection can be reused; a 2xx is an answer
        // whatever its body.
        let body = response
            .body_mut()
            .with_config()
            .limit(BODY_LIMIT)
            .read_to_vec()
            .unwrap_or_else(|e| format!("(the body could not be read: {e})").into_bytes());
        Ok(Reply {
            status,
            retry_after,
            date,
            location,
            body,
        })
    }

    /// The sink error for a failed request.
    fn transport(&self, error: ureq::Error) -> HttpSinkError {
        let url = self.url.clone();
        let detail = error.to_string();
        match error {
            ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => {
                HttpSinkError::Unreachable { url, detail }
            }
            ureq::Error::Timeout(_) => HttpSinkError::Timeout { url, detail },
            ureq::Error::Protocol(_) | ureq::Error::LargeResponseHeader(..) => {
                HttpSinkError::NotHttp { url, detail }
            }
            ureq::Error::Tls(_)
            | ureq::Error::Rustls(_)
            | ureq::Error::Pem(_)
            | ureq::Error::TlsRequired => HttpSinkError::Tls { url, detail },
            ureq::Error::Io(e) => {
                use std::io::ErrorKind::*;
                match e.kind() {
                    ConnectionRefused | NotFound | AddrNotAvailable | HostUnreachable
                    | NetworkUnreachable | NetworkDown => {
                        HttpSinkError::Unreachable { url, detail }
                    }
                    TimedOut | WouldBlock => HttpSinkError::Timeout { url, detail },
                    InvalidData => HttpSinkError::NotHttp { url, detail },
                    _ => HttpSinkError::ConnectionLost { url, detail },
                }
            }
            _ => HttpSinkError::Other { url, detail },
        }
    }
}

/// What the server answered.
struct Reply {
    status: StatusCode,
    retry_after: Option<String>,
    date: Option<String>,
    location: Option<String>,
    body: Vec<u8>,
}

impl Reply {
    /// `HTTP 500 Internal Server Error: <the start of the body>`.
    fn reason(&self) -> String {
        let mut reason = format!("HTTP {}", self.status.as_u16());
        if let Some(canonical) = self.status.canonical_reason() {
            reason.push(' ');
            reason.push_str(canonical);
        }
        let excerpt = excerpt(&self.body);
        if !excerpt.is_empty() {
            reason.push_str(": ");
            reason.push_str(&excerpt);
        }
        reason
    }
}

impl StatusSink for HttpSink {
    type Error = HttpSinkError;

    /// Posts the messages of `batch` one by one and answers for each from its response (see
    /// [`HttpSink`]); stops at a 429 or 503 (a pause) and at a transport failure (`Err`).
    fn deliver(
        &mut self,
        batch: &[StatusMessage],
        answers: &mut Answers,
    ) -> Result<(), Self::Error> {
        for message in batch {
            let key = message.key.to_string();
            let body = match serde_json::to_vec(&Envelope {
                idempotency_key: &key,
                message,
            }) {
                Ok(body) => body,
                Err(e) => {
                    answers.reject(
                        &message.key,
                        format!("the message cannot be encoded as JSON: {e}"),
                    );
                    continue;
                }
            };
            let reply = self.post(&key, &body)?;
            match reply.status.as_u16() {
                200..=299 => answers.accept(&message.key),
                429 | 503 => {
                    let now = reply.date.as_deref().and_then(http_date);
                    answers.pause(
                        reply
                            .retry_after
                            .as_deref()
                            .and_then(|v| retry_after(v, now)),
                    );
                    return Ok(());
                }
                500..=599 => answers.retry(&message.key, reply.reason()),
                400..=499 => answers.reject(&message.key, reply.reason()),
                300..=399 => {
                    let to = reply.location.as_deref().unwrap_or("nowhere given");
                    answers.retry(
                        &message.key,
                        format!(
                            "{} (to {to}; redirects are not followed: give the sink the final URL)",
                            reply.reason()
                        ),
                    );
                }
                _ => answers.retry(
                    &message.key,
                    format!("{} (not a final answer)", reply.reason()),
                ),
            }
        }
        Ok(())
    }
}

/// Checks that `url` is an absolute `http://` or `https://` URL with a host.
fn check_url(url: &str) -> Result<(), HttpSinkError> {
    let invalid = |reason: &str| HttpSinkError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: Uri = url.parse().map_err(|e| invalid(&format!("{e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(invalid(&format!("the scheme {other:?} is not HTTP"))),
        None => return Err(invalid("it has no scheme")),
    }
    match uri.host() {
        Some(host) if !host.is_empty() => Ok(()),
        _ => Err(invalid("it has no host")),
    }
}

/// The first [`EXCERPT`] bytes of `body` (cut at a character), as text on one line.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT)]);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    // A cut inside a multi-byte character leaves a replacement character at the end.
    let text = text.trim_end_matches('\u{FFFD}');
    let mut text = text.trim().to_string();
    if body.len() > EXCERPT {
        text.push_str("...");
    }
    text
}

/// The wait a `Retry-After` value asks for: delta-seconds, or an HTTP date compared with `now`,
/// the response's `Date` (the sink reads no clock: an HTTP date without a `Date` beside it is
/// `None`, the policy's back-off); `None` if it is neither.
fn retry_after(value: &str, now: Option<DateTime<Utc>>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds: a very long wait (the ledger bounds it).
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = http_date(value)?;
    Some((at - now?).to_std().unwrap_or(Duration::ZERO))
}

/// An HTTP date in any of the three forms of RFC 9110: `Sun, 06 Nov 1994 08:49:37 GMT`,
/// `Sunday, 06-Nov-94 08:49:37 GMT`, `Sun Nov  6 08:49:37 1994`.
fn http_date(value: &str) -> Option<DateTime<Utc>> {
    let value = value.trim();
    if let Ok(at) = DateTime::parse_from_rfc2822(value) {
        return Some(at.with_timezone(&Utc));
    }
    ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(value, format).ok())
        .map(|at| at.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn retry_after_takes_seconds_and_the_three_date_forms() {
        let now = Some(at("1994-11-06T08:49:00Z"));
        assert_eq!(retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        for date in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                retry_after(date, now),
                Some(Duration::from_secs(37)),
                "{date}"
            );
        }
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        for bad in ["", "-1", "1.5", "soon", "Sun, 06 Nov"] {
            assert_eq!(retry_after(bad, now), None, "{bad}");
        }
        // No `Date` to read a date against: the policy's back-off; seconds need none.
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:49:37 GMT", None), None);
        assert_eq!(retry_after("7", None), Some(Duration::from_secs(7)));
    }

    #[test]
    fn excerpts_are_short_single_lines() {
        assert_eq!(excerpt(b"  database\nbusy \r\n"), "database busy");
        let long = "é".repeat(150);
        let cut = excerpt(long.as_bytes());
        assert!(cut.ends_with("...") && !cut.contains('\u{FFFD}'), "{cut}");
        assert_eq!(cut.len(), 200 + 3);
    }

    #[test]
    fn only_absolute_http_urls_with_a_host() {
        for good in ["http://127.0.0.1:8080/status", "https://site.example/a?b=c"] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "not a url",
            "/status",
            "ftp://site.example/",
            "http://",
            "site.example",
        ] {
            assert!(
                matches!(check_url(bad), Err(HttpSinkError::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }
}
