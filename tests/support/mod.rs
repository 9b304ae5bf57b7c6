//! Real peers for the integration tests, in the test process: an SMTP server over TCP and a
//! DNS server (UDP and TCP), an HTTP server standing in for postal vendors, and one
//! receiving webhook calls.

pub mod dns_server;
pub mod smtp_server;
pub mod vendor_server;
pub mod webhook_receiver;
