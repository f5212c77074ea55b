//! A small HTTP/1.1 server on 127.0.0.1:0 for the client tests. Raw TCP, so it can also send
//! what real servers send on bad days: cut bodies, early closes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use culprit_mde::{ClientConfig, Clock, Cloud, Endpoints, MdeClient};
use culprit_model::Timestamp;
use secrecy::SecretString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

pub const SECRET: &str = "s3cr3t-Cl13nt-V4lue~xyz";
pub const TENANT: &str = "contoso-tenant";
pub const CLIENT: &str = "11111111-2222-3333-4444-555555555555";

#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Req {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn form(&self) -> HashMap<String, String> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn is_token(&self) -> bool {
        self.path().contains("/oauth2/")
    }
}

pub enum Reply {
    Http {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Declares `declared` bytes, sends `body`, then closes: a cut connection.
    Cut { declared: usize, body: Vec<u8> },
    /// Closes without answering.
    Close,
    /// Never answers (for timeouts).
    Hang,
}

impl Reply {
    pub fn json(status: u16, v: serde_json::Value) -> Reply {
        Reply::Http {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: serde_json::to_vec(&v).unwrap(),
        }
    }
    pub fn raw(status: u16, content_type: &str, body: &[u8]) -> Reply {
        Reply::Http {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.to_vec(),
        }
    }
    pub fn with_header(self, name: &str, value: &str) -> Reply {
        match self {
            Reply::Http {
                status,
                mut headers,
                body,
            } => {
                headers.push((name.into(), value.into()));
                Reply::Http {
                    status,
                    headers,
                    body,
                }
            }
            other => other,
        }
    }
    /// A v2 token answer.
    pub fn token(access_token: &str, expires_in: i64) -> Reply {
        Reply::json(
            200,
            serde_json::json!({"token_type": "Bearer", "expires_in": expires_in,
                               "ext_expires_in": expires_in, "access_token": access_token}),
        )
    }
}

type BoxFut = Pin<Box<dyn Future<Output = Reply> + Send>>;
type Handler = Arc<dyn Fn(Req) -> BoxFut + Send + Sync>;

pub struct Mock {
    pub url: Url,
    pub requests: Arc<Mutex<Vec<Req>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mock {
    /// A server whose handler answers synchronously.
    pub async fn start<F>(f: F) -> Mock
    where
        F: Fn(&Req) -> Reply + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        Self::start_async(move |r| {
            let f = f.clone();
            Box::pin(async move { f(&r) })
        })
        .await
    }

    pub async fn start_async<F>(f: F) -> Mock
    where
        F: Fn(Req) -> BoxFut + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(f);
        let reqs = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let reqs = reqs.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, handler, reqs).await;
                });
            }
        });
        Mock {
            url: Url::parse(&format!("http://{addr}/")).unwrap(),
            requests,
            task,
        }
    }

    pub fn requests(&self) -> Vec<Req> {
        self.requests.lock().unwrap().clone()
    }
    pub fn token_requests(&self) -> Vec<Req> {
        self.requests().into_iter().filter(Req::is_token).collect()
    }
    pub fn api_requests(&self) -> Vec<Req> {
        self.requests()
            .into_iter()
            .filter(|r| !r.is_token())
            .collect()
    }

    pub fn config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new(
            Cloud::Commercial,
            TENANT,
            CLIENT,
            SecretString::from(SECRET),
        );
        cfg.endpoints = Some(Endpoints::single(&self.url));
        cfg
    }

    pub fn client(&self) -> MdeClient {
        MdeClient::new(self.config()).unwrap()
    }
}

async fn read_request(stream: &mut TcpStream) -> Option<Req> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let target = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Req {
        method,
        target,
        headers,
        body,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn serve(
    mut stream: TcpStream,
    handler: Handler,
    reqs: Arc<Mutex<Vec<Req>>>,
) -> std::io::Result<()> {
    // One request per connection: the reply says `Connection: close`.
    let Some(req) = read_request(&mut stream).await else {
        return Ok(());
    };
    reqs.lock().unwrap().push(req.clone());
    match handler(req).await {
        Reply::Http {
            status,
            headers,
            body,
        } => {
            let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status));
            for (k, v) in headers {
                out.push_str(&format!("{k}: {v}\r\n"));
            }
            out.push_str(&format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ));
            stream.write_all(out.as_bytes()).await?;
            stream.write_all(&body).await?;
        }
        Reply::Cut { declared, body } => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(&body).await?;
        }
        Reply::Close => {}
        Reply::Hang => std::future::pending::<()>().await,
    }
    stream.flush().await?;
    stream.shutdown().await
}

/// A clock the test moves by hand.
#[derive(Debug)]
pub struct ManualClock(pub AtomicI64);

impl ManualClock {
    pub fn new() -> Arc<Self> {
        Arc::new(ManualClock(AtomicI64::new(
            Timestamp::parse("2026-01-10T12:00:00Z").unwrap().0,
        )))
    }
    pub fn advance_secs(&self, s: i64) {
        self.0.fetch_add(s * 10_000_000, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

/// Counts calls; handy inside handlers.
#[derive(Debug, Default)]
pub struct Counter(AtomicUsize);

impl Counter {
    pub fn next(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Answers tokens with `tok-N` (N counts token requests) and everything else with `api`.
pub fn with_tokens<F>(api: F) -> impl Fn(&Req) -> Reply + Send + Sync + 'static
where
    F: Fn(&Req) -> Reply + Send + Sync + 'static,
{
    let n = Counter::default();
    move |r: &Req| {
        if r.is_token() {
            Reply::token(&format!("tok-{}", n.next()), 3599)
        } else {
            api(r)
        }
    }
}

/// A log sink for a tracing subscriber, so tests can read what was logged.
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
