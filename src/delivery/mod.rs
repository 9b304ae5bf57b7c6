//! Delivery: the durable queue (`queue`), the worker that drains it (`worker`), test-mode
//! capture (`capture`), live delivery policy (`live`), and the SMTP protocol side: sessions
//! and their pool (`smtp`), MX resolution (`mx`) and bounce classification (`bounce`).

pub mod bounce;
pub mod capture;
pub mod live;
pub mod mx;
pub mod queue;
pub mod smtp;
pub mod worker;

pub use worker::{DeliveryHandle, Worker};
