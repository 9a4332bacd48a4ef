//! An HTTP/1 request to an `http1` upstream: the attempts (a server each,
//! by `attempts.rs`), on each a connection from the server's pool (or a new
//! one) and an exchange, then the response relayed to the client and the
//! connection put back when the exchange ended cleanly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Buf;
use http::StatusCode;

use super::conn::{Client, ClientStream};
use super::exchange::{
    send_body_and_read_head, write_head, ClientSender, Deadline, ExchangeError, SendError,
};
use super::heads::{write_client_response, ClientFraming, Persistence, CONTINUE};
use super::relay::{self, BodyDecoder, ClientFault, RequestBody, UpstreamFault};
use super::request::{answer, After, Facts, Forward, Known, Reply};
use crate::error::ProxyError;
use crate::http1::{response_framing, BodyLength};
use crate::proxy::attempts::{Attempts, Outcome, Verdict};
use crate::snapshot::Snapshot;
use crate::stats::ClientTimeout;
use crate::upstream::h1::{ConnectError, UpstreamConn, UpstreamStream};
use crate::upstream::{Http1Pool, InFlight};

/// Why an attempt on one server did not bring a response head.
enum AttemptError {
    Connect(ConnectError),
    Upstream(UpstreamFault),
    TimedOut,
    Client(ClientFault),
}

impl From<ExchangeError> for AttemptError {
    fn from(error: ExchangeError) -> AttemptError {
        match error {
            ExchangeError::NothingSent(error) => AttemptError::Upstream(UpstreamFault::Io(error)),
            ExchangeError::Upstream { fault, .. } => AttemptError::Upstream(fault),
            ExchangeError::TimedOut => AttemptError::TimedOut,
            ExchangeError::Body(SendError::Client(fault)) => AttemptError::Client(fault),
            ExchangeError::Body(SendError::SourceTimedOut) => {
                AttemptError::Client(ClientFault::TimedOut)
            }
            // A client connection's body fails only by its client.
            ExchangeError::Body(_) => AttemptError::Client(ClientFault::Gone),
        }
    }
}

/// Sends the request (its upstream head in `client.out`) to an `http1`
/// upstream, with retries, and relays the response.
pub(super) async fn forward_to_http1<S: ClientStream>(
    client: &mut Client<S>,
    snapshot: &Snapshot,
    mut known: Known,
    forward: Forward,
    started: Instant,
) -> After {
    let upstream = &snapshot.upstreams[forward.upstream];
    let facts = known.facts;
    let replayable = facts.method.is_idempotent() && facts.framing.body == BodyLength::Empty;
    let mut body = RequestBody::new(facts.framing.body, snapshot.config.global.max_request_body)
        .with_min_rate(client.limits.body_min_rate);
    let mut attempts = Attempts::new(upstream, forward.key, replayable);
    let mut continue_sent = false;
    loop {
        let Some(index) = attempts.next_server().await else {
            let error = attempts.error();
            return answer(client, snapshot, known, Reply::Error(error), &body).await;
        };
        let endpoint = &upstream.endpoints[index];
        known.decision.server = Some(index);
        known.decision.attempts = attempts.made();
        if let Some(access) = known.access.as_mut() {
            access.server = Some(Arc::clone(&endpoint.addr));
            access.attempts = attempts.made();
        }
        let pool = endpoint
            .client
            .http1()
            .expect("the servers of an http1 upstream have HTTP/1.1 pools");
        // No attempt follows one that sent some of the body (`replayable`).
        debug_assert!(body.untouched());
        let in_flight = InFlight::start(endpoint);
        let sent_at = upstream.tracks_latency().then(Instant::now);
        let exchange = Exchange {
            facts,
            timeout: upstream.timeout,
            replayable,
        };
        let result = exchange
            .attempt(client, pool, &mut body, &mut continue_sent)
            .await;
        if let (Some(sent_at), Ok(_)) = (sent_at, &result) {
            upstream.observe_latency(index, sent_at.elapsed());
        }
        let verdict = match &result {
            Ok(_) => match StatusCode::from_u16(client.response.status) {
                Ok(status) => attempts.judge(index, Outcome::Responded(status)),
                Err(_) => attempts.judge(index, Outcome::Failed(&"invalid status code")),
            },
            Err(AttemptError::Connect(error)) => {
                attempts.judge(index, Outcome::ConnectFailed(error))
            }
            Err(AttemptError::Upstream(fault)) => attempts.judge(index, Outcome::Failed(fault)),
            Err(AttemptError::TimedOut) => attempts.judge(index, Outcome::TimedOut),
            // The client's doing: not counted against the server.
            Err(AttemptError::Client(fault)) => {
                let fault = *fault;
                return client_failed(client, snapshot, known, fault, &body).await;
            }
        };
        match (verdict, result) {
            (Verdict::Retry, _) => continue,
            (Verdict::Stop(error), _) => {
                return answer(client, snapshot, known, Reply::Error(error), &body).await
            }
            (Verdict::Deliver, Ok(conn)) => {
                let delivery = Delivery {
                    snapshot,
                    known,
                    upstream: forward.upstream,
                    index,
                    body_done: body.is_done(),
                    started,
                };
                return delivery.run(client, pool, conn, in_flight).await;
            }
            (Verdict::Deliver, Err(_)) => unreachable!("only a response is delivered"),
        }
    }
}

/// Answers a request the client itself broke off or overran.
async fn client_failed<S: ClientStream>(
    client: &mut Client<S>,
    snapshot: &Snapshot,
    known: Known,
    fault: ClientFault,
    body: &RequestBody,
) -> After {
    let error = match fault {
        ClientFault::Gone => return After::Drop,
        ClientFault::TimedOut => {
            client.conn.timed_out(ClientTimeout::Body);
            ProxyError::ClientTimeout
        }
        ClientFault::TooSlow => {
            client.conn.timed_out(ClientTimeout::BodyRate);
            ProxyError::ClientTimeout
        }
        ClientFault::TooLarge => ProxyError::BodyTooLarge,
        ClientFault::BadChunk(_) => ProxyError::BadRequest("the chunked request body is not valid"),
    };
    answer(client, snapshot, known, Reply::Error(error), body).await
}

/// One request's exchanges with the servers of an `http1` upstream.
struct Exchange {
    facts: Facts,
    timeout: Duration,
    /// Idempotent with an empty body.
    replayable: bool,
}

impl Exchange {
    /// One attempt on one server: a connection (pooled, else new), the
    /// request written, the response head read.
    async fn attempt<S: ClientStream>(
        &self,
        client: &mut Client<S>,
        pool: &Arc<Http1Pool>,
        body: &mut RequestBody,
        continue_sent: &mut bool,
    ) -> Result<UpstreamConn, AttemptError> {
        let mut conn = match pool.checkout() {
            Some(conn) => conn,
            None => pool
                .connector
                .connect()
                .await
                .map_err(AttemptError::Connect)?,
        };
        loop {
            match self
                .exchange(client, &mut conn.stream, body, continue_sent)
                .await
            {
                Ok(()) => return Ok(conn),
                Err(error) if conn.reused && error.may_resend(self.replayable) => {
                    tracing::debug!(%error, "a pooled upstream connection was closed by the server; sending again on a new one");
                    conn = pool
                        .connector
                        .connect()
                        .await
                        .map_err(AttemptError::Connect)?;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// The request (head in `client.out`, body from the client) on one
    /// connection, and the response head; interim responses on the way
    /// pass to the client.
    async fn exchange<S: ClientStream>(
        &self,
        client: &mut Client<S>,
        upstream: &mut UpstreamStream,
        body: &mut RequestBody,
        continue_sent: &mut bool,
    ) -> Result<(), ExchangeError> {
        client.from_upstream.clear();
        write_head(upstream, &client.out).await?;
        let with_body = !body.is_done();
        if with_body
            && self.facts.framing.expect_continue
            && !*continue_sent
            && client.input.is_empty()
        {
            *continue_sent = true;
            client
                .send(CONTINUE)
                .await
                .map_err(|_| ExchangeError::Body(SendError::Client(ClientFault::Gone)))?;
        }
        let Client {
            io,
            input,
            out,
            from_upstream,
            response,
            deadline,
            limits,
            conn,
            ..
        } = client;
        let mut sender = ClientSender {
            io,
            input,
            body,
            chunked: self.facts.framing.body == BodyLength::Chunked,
            ended: false,
            http10: self.facts.http10,
            continue_sent,
            send_limit: limits.send,
            conn,
        };
        // The head in `out` is sent: the body's pieces go through it.
        send_body_and_read_head(
            upstream,
            from_upstream,
            response,
            out,
            &mut sender,
            with_body,
            Some(Deadline::new(deadline, self.timeout, limits.body)),
        )
        .await
        .map(|_| ())
    }
}

/// A response head from a server, on its way to the client.
struct Delivery<'s> {
    snapshot: &'s Snapshot,
    known: Known,
    /// The upstream, and its server, that answered.
    upstream: usize,
    index: usize,
    /// The request body was read to its end.
    body_done: bool,
    started: Instant,
}

impl Delivery<'_> {
    /// Relays the response (head in `client.response`) to the client; the
    /// connection goes back to `pool` when the exchange ended cleanly.
    async fn run<S: ClientStream>(
        mut self,
        client: &mut Client<S>,
        pool: &Arc<Http1Pool>,
        mut conn: UpstreamConn,
        in_flight: InFlight,
    ) -> After {
        let snapshot = self.snapshot;
        let upstream = &snapshot.upstreams[self.upstream];
        let endpoint = &upstream.endpoints[self.index];
        let facts = self.known.facts;
        let status = client.response.status;
        let switching = status == 101;
        let framing = if switching && !facts.framing.upgrade {
            Err("a switch of protocols nobody asked for")
        } else {
            response_framing(&client.response, &client.from_upstream, facts.is_head())
        };
        let framing = match framing {
            Ok(framing) => framing,
            Err(why) => {
                tracing::warn!(upstream = %upstream.name, server = %endpoint.addr, why, "invalid response from upstream");
                upstream.record_failure(self.index, why);
                let body = RequestBody::new(BodyLength::Empty, None);
                return answer(
                    client,
                    snapshot,
                    self.known,
                    Reply::Error(ProxyError::BadGateway),
                    &body,
                )
                .await;
            }
        };
        let client_framing = match framing.body {
            BodyLength::Empty | BodyLength::Exact(_) => ClientFraming::AsIs,
            BodyLength::Chunked | BodyLength::UntilClose if facts.http10 => {
                ClientFraming::UntilClose
            }
            BodyLength::Chunked | BodyLength::UntilClose => ClientFraming::Chunked,
        };
        let keep = facts.framing.keep_alive
            && self.body_done
            && client_framing != ClientFraming::UntilClose
            && !client.stopping();
        let persistence = match (switching, keep) {
            (true, _) => Persistence::Upgrade,
            (false, true) => Persistence::KeepAlive {
                http10: facts.http10,
            },
            (false, false) => Persistence::Close,
        };
        let decision = self
            .known
            .debug
            .then(|| self.known.decision.describe(snapshot));
        write_client_response(
            &mut client.out,
            &client.from_upstream,
            &client.response,
            client_framing,
            persistence,
            decision.as_ref(),
        );
        client.from_upstream.advance(client.response.len);
        snapshot.record_response(self.known.decision.vhost, status);
        if let Some(access) = self.known.access.as_mut() {
            access.status = status;
        }
        if switching {
            // Logged now; the server counts as in flight until the tunnel closes.
            drop(self.known.access.take());
            relay::tunnel(client, &mut conn.stream).await;
            drop(in_flight);
            return After::Drop;
        }
        let mut body = BodyDecoder::new(framing.body);
        let mut bytes = 0;
        let relayed = relay::relay_response(
            client,
            &mut conn.stream,
            &mut body,
            client_framing == ClientFraming::Chunked,
            &mut bytes,
        )
        .await;
        endpoint.stats.durations.observe(self.started.elapsed());
        if let Some(access) = self.known.access.as_mut() {
            access.bytes = bytes;
        }
        drop(in_flight);
        match relayed {
            Ok(()) => {
                if framing.keep_alive && self.body_done && client.from_upstream.is_empty() {
                    pool.checkin(conn);
                }
                match (keep, self.body_done) {
                    (true, _) => After::KeepAlive,
                    (false, true) => After::Close,
                    (false, false) => After::Linger,
                }
            }
            Err(relay::RelayError::Client) => After::Drop,
            Err(relay::RelayError::Upstream(fault)) => {
                tracing::warn!(upstream = %upstream.name, server = %endpoint.addr, error = %fault, "upstream response cut short");
                upstream.record_failure(self.index, "response body cut short");
                After::Drop
            }
        }
    }
}
