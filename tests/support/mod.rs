//! Real peers for the integration tests, in the test process: an SMTP server over TCP and a
//! DNS server (UDP and TCP).

pub mod dns_server;
pub mod smtp_server;
