//! grove-server scenarios, through the real router.

mod admin;
mod auth;
mod backup;
mod connections;
mod errors;
mod fault;
mod files;
mod files_s3;
mod hardening;
mod harness;
mod joins;
mod keys;
mod link_joins;
mod mailbox;
mod mls;
mod multi_instance;
mod ordering;
mod push;
mod removal;
mod restart;
mod resync;
mod rooms;
mod storage;
