//! grove-client: the client library behind the `grove` command.
//!
//! A profile is one identity with one SQLite state file. [`Server`] speaks signed HTTP to a
//! grove server; the local store ([`ClientStore`]) keeps identity, group state, history and
//! cursors; the profile ties them to the MLS engine of grove-proto. The store, Olm and transport
//! modules are the crate's own: what the binary, the benchmarks and the tests name of them is
//! re-exported here.

mod core;
pub mod files;
pub mod known;
mod lock;
pub mod net;
pub(crate) mod olm;
pub mod profile;
pub mod proxy;
pub mod push;
pub(crate) mod store;
pub(crate) mod transport;

pub use olm::OlmDevice;
pub use store::{Batch, ClientStore, Event, Membership, Message, MessageKind, Passphrase, RoomStatus, StoreError};
pub use transport::{Server, TransportError};
