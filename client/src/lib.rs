//! The Quiver Rust SDK. Runs on tokio with quinn; never depends on glommio, engine, net or broker.

pub mod transport;
