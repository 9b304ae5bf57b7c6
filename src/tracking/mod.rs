//! Tracking and unsubscribe: signed link tokens (`token`), per-recipient copies of marketing
//! and tracked emails (`copies`) with their HTML rewriting (`html`), and the public routes
//! that answer those links (`routes`, SQL in `store`).

pub mod copies;
pub mod html;
pub mod routes;
pub mod store;
pub mod token;
