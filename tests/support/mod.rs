//! Real peers for the integration tests, in the test process: an SMTP server over TCP and a
//! DNS server (UDP and TCP), and an HTTP server standing in for postal vendors.

pub mod dns_server;
pub mod smtp_server;
pub mod vendor_server;
