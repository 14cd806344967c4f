//! webhook-ingest end to end, one module per topic: handlers called
//! directly on in-memory fakes of the store and the bus, the routes through
//! the HTTP router on the local backend, and the redelivery sweeper against
//! a stub GitHub on 127.0.0.1.

mod body_guard;
mod deliveries;
mod flood;
mod http_level;
mod logs;
mod ready;
mod secrets;
mod support;
mod sweeper;
