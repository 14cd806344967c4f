//! GitHub, as the App sees it: webhook signatures (HMAC-SHA256, constant
//! time), the App's JWT (RS256), and the REST calls the gateway makes as the
//! App (hook config, deliveries, installation tokens).

pub mod app_jwt;
pub(crate) mod client;
pub(crate) mod error;
pub mod signature;

pub use client::{
    API_VERSION, AppInfo, DeliveryPage, GitHubApp, HookConfig, HookDelivery, RateLimit, USER_AGENT,
};
pub use error::GitHubError;
