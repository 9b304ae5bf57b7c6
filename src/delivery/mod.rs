//! Delivery: the durable queue (`queue`), the worker that drains it (`worker`), test-mode
//! capture (`capture`) and live SMTP delivery (`live`).

pub mod capture;
pub mod live;
pub mod queue;
pub mod worker;

pub use worker::{DeliveryHandle, Worker};
