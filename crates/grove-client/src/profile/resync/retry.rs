//! Resync requests and offers that could not reach the server (unreachable, or it said "not now":
//! `TransportError::is_transient`), kept in the
//! profile's meta and posted again at the end of the room's sync, and of every sync after until
//! they reach it (`Profile::retry_resync`): a member stuck while its server was down still asks
//! once it is back, and a member who went on still offers. What the server refused is not
//! kept: it would be refused again.
//!
//! A resync's external commit is covered the same way: before it is posted, a request of the
//! stuck epoch is kept, and dropped once the outcome is known (taken and applied, or refused).
//! If the answer is lost, or the client dies before it applies the commit, the room may hold
//! a leaf of this member that this member has no secrets for; the member is still in its stuck
//! epoch, so the next sync asks again, and the answer's GroupInfo lets it replace that leaf
//! (`MlsEngine::prepare_resync` finds the member's leaf by its user).

use grove_proto::mls::engine::GroupId;
use serde::{Deserialize, Serialize};

use super::super::{ClientError, Profile, Result};
use crate::store::LocalRoom;
use crate::transport::Server;

/// What waits to be posted again in one room.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(in crate::profile) struct Retry {
    /// A request of this epoch (the member was stuck there).
    pub request: Option<u64>,
    /// Offers for members stuck at these epochs, with those epochs' resync keys.
    pub offers: Vec<(u64, Vec<u8>)>,
}

/// The meta key of a room's retries.
fn retry_key(link: &str) -> String {
    format!("resync.retry.{link}")
}

impl Profile {
    /// Keeps what `edit` adds to the room's retries.
    pub(in crate::profile) fn retry_later(&self, link: &str, edit: impl FnOnce(&mut Retry)) -> Result<()> {
        let mut retry = self.retries(link)?;
        edit(&mut retry);
        retry.offers.sort_unstable();
        retry.offers.dedup();
        if retry.request.is_none() && retry.offers.is_empty() {
            self.store.delete_meta(&retry_key(link))?;
            return Ok(());
        }
        let bytes = serde_json::to_vec(&retry).map_err(|e| ClientError::Invalid(e.to_string()))?;
        self.store.set_meta(&retry_key(link), &bytes)?;
        Ok(())
    }

    fn retries(&self, link: &str) -> Result<Retry> {
        // A record this version cannot read is dropped: nothing in it is worth failing a sync.
        Ok(self.store.meta(&retry_key(link))?.and_then(|v| serde_json::from_slice(&v).ok()).unwrap_or_default())
    }

    /// Posts again what could not reach the server before: the request, if this member is
    /// still stuck in its epoch; the offers, with a GroupInfo of this member's epoch now. What
    /// again cannot reach the server is kept for the next sync; the rest is dropped.
    pub(in crate::profile) async fn retry_resync(&mut self, server: &Server, room: &LocalRoom) -> Result<()> {
        let Retry { request, offers } = self.retries(&room.link)?;
        if request.is_none() && offers.is_empty() {
            return Ok(());
        }
        self.store.delete_meta(&retry_key(&room.link))?;
        let ours = self.engine.get(&self.store, &self.identity)?.epoch(&GroupId::new(room.group_id.clone()))?;
        let unreachable = |e: &ClientError| matches!(e, ClientError::Server(t) if t.is_transient());
        let mut again = Retry::default();
        if let Some(epoch) = request.filter(|e| *e == ours) {
            match self.request_resync(server, room, epoch).await {
                Ok(()) => {}
                Err(e) if unreachable(&e) => again.request = Some(epoch),
                Err(e) => tracing::warn!(room = room.link, error = %e, "asking for a resync failed"),
            }
        }
        for (stuck, key) in offers.into_iter().filter(|(stuck, _)| *stuck < ours) {
            let Ok(k) = <[u8; 32]>::try_from(key.as_slice()) else { continue };
            match self.offer_resync(server, room, stuck, &k).await {
                Ok(()) => {}
                Err(e) if unreachable(&e) => again.offers.push((stuck, key)),
                Err(e) => tracing::info!(room = room.link, stuck, error = %e, "a resync offer was not taken"),
            }
        }
        if again.request.is_some() || !again.offers.is_empty() {
            self.retry_later(&room.link, |r| *r = again)?;
        }
        Ok(())
    }
}
