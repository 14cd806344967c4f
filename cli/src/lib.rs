//! The `patchpanda` operator command as a library, so the end-to-end tests
//! can start the local stack in-process. Public: the command tree
//! ([`commands::run`]), the local stack ([`dev::start`]) and logging; the
//! rest is the commands' own.

pub(crate) mod announce;
pub mod commands;
pub mod context;
pub mod dev;
pub mod dev_emulator;
pub mod dev_identity;
pub mod dev_scheduler;
pub mod failure;
pub(crate) mod id_token;
pub mod logging;
pub(crate) mod output;
pub(crate) mod secret_create;
