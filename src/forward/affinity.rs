//! Affinity: the upstream connections of one HTTP/1 client connection, driven in that
//! connection's own task.
//!
//! A request on an HTTP/1 client connection is sent upstream on a connection that belongs to
//! that client connection (one per upstream): no pool checkout, and the upstream connection is
//! polled by the same task that serves the client (its [`Affinity::drive`] future runs beside
//! the server connection), so a small request and its response cross no task or thread — as
//! linkerd's and pingora's HTTP/1 paths do.
//!
//! - An upstream connection is used by one request at a time; one that is closed or not ready
//!   is let go (it finishes what it is doing and closes) and another is taken.
//! - When the client connection ends, its idle upstream connections are parked with their
//!   upstream ([`Park`], at most `upstream.pool_max_idle`), for the next client connection to
//!   take: clients that open a connection per request still reuse upstream connections. One
//!   still carrying a request goes on in a task of its own until that request is over.
//! - Idle for `upstream.pool_idle_timeout` (owned or parked), a connection is closed.
//! - HTTP/2 client connections (concurrent requests, each in a task of its own) and wharf's own
//!   side requests use the shared pool instead.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use tokio::time::{Instant, Sleep};

use super::Body;

/// An upstream connection's own future (reading, writing; ends when the connection closes).
pub(super) type Driven = Pin<Box<dyn Future<Output = ()> + Send>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // a panic while holding one of these locks leaves nothing half-done that matters
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The upstream connections of one client connection.
#[derive(Default)]
pub struct Affinity {
    shared: Mutex<Shared>,
}

#[derive(Default)]
struct Shared {
    conns: Vec<Conn>,
    next_id: u64,
    /// The task that runs [`Affinity::drive`], woken when a connection is added (or one is
    /// put idle while no expiry timer is armed).
    waker: Option<Waker>,
    timer_armed: bool,
}

struct Conn {
    id: u64,
    upstream: &'static str,
    park: Arc<Park>,
    future: Driven,
    /// While the connection waits for this client's next request.
    idle: Option<Idle>,
}

struct Idle {
    sender: SendRequest<Body>,
    expires: Instant,
}

/// A connection taken for one request: give it back with [`Affinity::put`].
pub(super) struct Taken {
    pub id: u64,
    pub sender: SendRequest<Body>,
    /// It has carried a request before (so a request it closes before sending may be sent
    /// again on another).
    pub reused: bool,
}

impl std::fmt::Debug for Affinity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = lock(&self.shared);
        f.debug_struct("Affinity")
            .field("connections", &s.conns.len())
            .finish()
    }
}

impl Affinity {
    /// This client connection's idle connection to `upstream` if it is ready, else a parked
    /// one (made by an earlier client connection).
    pub(super) fn take(&self, upstream: &'static str, park: &Arc<Park>) -> Option<Taken> {
        let mut s = lock(&self.shared);
        if let Some(c) = s
            .conns
            .iter_mut()
            .find(|c| c.upstream == upstream && c.idle.is_some())
            && let Some(idle) = c.idle.take()
            && idle.sender.is_ready()
        {
            return Some(Taken {
                id: c.id,
                sender: idle.sender,
                reused: true,
            });
        }
        let parked = park.pop()?;
        let id = s.add(upstream, park.clone(), parked.future);
        Some(Taken {
            id,
            sender: parked.sender,
            reused: true,
        })
    }

    /// Keep connection `id` for this client's next request (for at most `idle_timeout`).
    pub(super) fn put(&self, id: u64, sender: SendRequest<Body>, idle_timeout: Duration) {
        let expires = Instant::now() + idle_timeout;
        let mut s = lock(&self.shared);
        if let Some(c) = s.conns.iter_mut().find(|c| c.id == id) {
            c.idle = Some(Idle { sender, expires });
            if !s.timer_armed
                && let Some(w) = &s.waker
            {
                w.wake_by_ref();
            }
        }
    }

    /// Drive a new connection to `upstream` here; its id, for [`Affinity::put`].
    pub(super) fn attach(&self, upstream: &'static str, park: &Arc<Park>, future: Driven) -> u64 {
        lock(&self.shared).add(upstream, park.clone(), future)
    }

    /// Drive this client connection's upstream connections, and close idle ones when they
    /// expire. Never finishes: run it beside the server connection; dropped with it, it parks
    /// the idle connections with their upstreams and closes the rest.
    pub fn drive(&self) -> impl Future<Output = ()> + Send + '_ {
        Drive {
            affinity: self,
            timer: None,
        }
    }
}

impl Shared {
    fn add(&mut self, upstream: &'static str, park: Arc<Park>, future: Driven) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.conns.push(Conn {
            id,
            upstream,
            park,
            future,
            idle: None,
        });
        if let Some(w) = &self.waker {
            w.wake_by_ref();
        }
        id
    }
}

struct Drive<'a> {
    affinity: &'a Affinity,
    /// Armed when a connection was put idle: fires at (or before) the earliest expiry; a
    /// connection used meanwhile moves its expiry on, and the timer is re-armed when it fires
    /// (once per timeout while requests keep coming, not once per request).
    timer: Option<Pin<Box<Sleep>>>,
}

impl Future for Drive<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut s = lock(&this.affinity.shared);
        if !s.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        this.expire_idle(&mut s, cx);
        // a connection whose future ends is closed (by either side, or after an error)
        s.conns
            .retain_mut(|c| c.future.as_mut().poll(cx).is_pending());
        Poll::Pending
    }
}

impl Drive<'_> {
    fn expire_idle(&mut self, s: &mut Shared, cx: &mut Context<'_>) {
        loop {
            match &mut self.timer {
                Some(t) => {
                    if t.as_mut().poll(cx).is_pending() {
                        return;
                    }
                    let now = Instant::now();
                    for c in &mut s.conns {
                        if c.idle.as_ref().is_some_and(|i| i.expires <= now) {
                            // without its sender an idle connection closes
                            c.idle = None;
                        }
                    }
                    self.timer = None;
                    s.timer_armed = false;
                }
                None => {
                    let Some(earliest) = s
                        .conns
                        .iter()
                        .filter_map(|c| c.idle.as_ref())
                        .map(|i| i.expires)
                        .min()
                    else {
                        return;
                    };
                    self.timer = Some(Box::pin(tokio::time::sleep_until(earliest)));
                    s.timer_armed = true;
                }
            }
        }
    }
}

impl Drop for Drive<'_> {
    fn drop(&mut self) {
        let conns = std::mem::take(&mut lock(&self.affinity.shared).conns);
        let now = Instant::now();
        for c in conns {
            match c.idle {
                Some(idle) if idle.expires > now && idle.sender.is_ready() => {
                    c.park.push(Parked {
                        sender: idle.sender,
                        future: c.future,
                        expires: idle.expires,
                    });
                }
                Some(_) => {}
                // carrying a request still: its exchange goes on in a task of its own (a
                // write whose client hung up is still done, and recorded — see
                // `observe::to_the_end`); the connection closes once its request is over
                None => {
                    if let Ok(rt) = tokio::runtime::Handle::try_current() {
                        rt.spawn(c.future);
                    }
                }
            }
        }
    }
}

/// Idle connections to one upstream that no client connection owns: left by client
/// connections that ended, taken by new ones. Nobody polls them while parked; a parked
/// connection the upstream closed meanwhile fails its next request before sending it, and
/// that request is sent again on a new connection.
pub(super) struct Park {
    max: usize,
    parked: Mutex<Vec<Parked>>,
    /// A task closes parked connections when they expire while any are parked.
    sweeping: AtomicBool,
}

pub(super) struct Parked {
    sender: SendRequest<Body>,
    future: Driven,
    expires: Instant,
}

impl Park {
    pub(super) fn new(max: usize) -> Self {
        Self {
            max,
            parked: Mutex::new(Vec::new()),
            sweeping: AtomicBool::new(false),
        }
    }

    /// The most recently used parked connection that has not expired.
    fn pop(&self) -> Option<Parked> {
        let mut parked = lock(&self.parked);
        let now = Instant::now();
        while let Some(p) = parked.pop() {
            if p.expires > now && !p.sender.is_closed() {
                return Some(p);
            }
        }
        None
    }

    fn push(self: &Arc<Self>, p: Parked) {
        let start_sweep = {
            let mut parked = lock(&self.parked);
            if parked.len() >= self.max {
                return;
            }
            parked.push(p);
            // under the lock: the sweeper decides to stop under it too
            !self.sweeping.swap(true, Ordering::AcqRel)
        };
        if start_sweep {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    rt.spawn(self.clone().sweep());
                }
                Err(_) => self.sweeping.store(false, Ordering::Release),
            }
        }
    }

    /// Close parked connections as they expire, until none is parked.
    async fn sweep(self: Arc<Self>) {
        loop {
            let next = {
                let mut parked = lock(&self.parked);
                let now = Instant::now();
                parked.retain(|p| p.expires > now);
                match parked.iter().map(|p| p.expires).min() {
                    Some(t) => t,
                    None => {
                        self.sweeping.store(false, Ordering::Release);
                        return;
                    }
                }
            };
            tokio::time::sleep_until(next).await;
        }
    }

    /// How many connections are parked (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.parked).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, DuplexStream};

    /// A client connection over an in-memory pipe: its sender, its future, the server's end.
    async fn connection() -> (SendRequest<Body>, Driven, DuplexStream) {
        let (client, server) = tokio::io::duplex(4096);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client))
            .await
            .unwrap();
        let future: Driven = Box::pin(async move {
            let _ = conn.await;
        });
        (sender, future, server)
    }

    fn open(a: &Affinity) -> usize {
        lock(&a.shared).conns.len()
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_closes_after_its_timeout() {
        let affinity = Arc::new(Affinity::default());
        let park = Arc::new(Park::new(4));
        let (sender, future, mut server) = connection().await;
        let id = affinity.attach("registry", &park, future);
        affinity.put(id, sender, Duration::from_secs(1));
        let driving = tokio::spawn({
            let a = affinity.clone();
            async move { a.drive().await }
        });
        let mut byte = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(900), server.read(&mut byte)).await;
        assert!(early.is_err(), "closed before its idle timeout");
        let n = tokio::time::timeout(Duration::from_millis(200), server.read(&mut byte))
            .await
            .expect("still open after its idle timeout")
            .unwrap();
        assert_eq!(n, 0);
        tokio::task::yield_now().await;
        assert_eq!(open(&affinity), 0);
        driving.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_ended_client_connection_parks_its_idle_connections_within_bounds() {
        let park = Arc::new(Park::new(2));
        let mut servers = Vec::new();
        for _ in 0..3 {
            let affinity = Arc::new(Affinity::default());
            let (sender, future, server) = connection().await;
            servers.push(server);
            let id = affinity.attach("registry", &park, future);
            affinity.put(id, sender, Duration::from_secs(5));
            let driving = tokio::spawn({
                let a = affinity.clone();
                async move { a.drive().await }
            });
            // polled once: the connection is ready for a request
            tokio::time::sleep(Duration::from_millis(1)).await;
            driving.abort();
            let _ = driving.await;
        }
        // the third found the park full (pool_max_idle) and was closed
        assert_eq!(park.len(), 2);
        // a new client connection takes one of them (the last parked)
        let affinity = Affinity::default();
        let taken = affinity
            .take("registry", &park)
            .expect("a parked connection");
        assert!(taken.reused);
        assert_eq!(park.len(), 1);
        assert_eq!(open(&affinity), 1);
        // the other expires while parked and is closed by the sweeper
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(park.len(), 0);
    }
}
