//! A commit this member cannot process: whether its fault is provable (a membership tag that
//! does not verify), and the membership key that proves it ([`MlsEngine::reveal_membership_key`]).
//! See [`crate::mls::fault`] for the proof and why revealing the key is safe.

use mls_rs::error::MlsError;
use mls_rs::mls_rs_codec::MlsEncode;
use zeroize::Zeroizing;

use super::{parse, EngineError, GroupId, MlsEngine};
use crate::mls::error::Internal;
use crate::mls::fault::{membership_tag_input, membership_tag_verifies};

impl MlsEngine {
    /// The group context of the group's current epoch, TLS-encoded (the input of membership
    /// tags besides the message: see [`crate::mls::fault`]).
    pub fn group_context(&self, g: &GroupId) -> Result<Vec<u8>, EngineError> {
        self.group(g)?
            .context()
            .mls_encode_to_vec()
            .map_err(|e| EngineError::Internal(Internal::caused("encoding the group context", e)))
    }

    /// For a commit of the group's current epoch that this member cannot process: the epoch's
    /// membership key, if (and only if) the commit's fault is that its membership tag does not
    /// verify under it. `None` for a commit whose membership tag verifies (its fault, if any, is
    /// elsewhere: the confirmation tag, the path secrets — nothing the server can check), for
    /// one of another epoch, and for anything that is not a member's PublicMessage commit.
    ///
    /// Changes nothing: the group is processed in memory with the crypto provider's MAC tap on
    /// (mls-rs checks the membership tag first, so the tap holds the key it used), then rebuilt
    /// from its stored state.
    pub fn reveal_membership_key(
        &mut self,
        g: &GroupId,
        message: &[u8],
    ) -> Result<Option<Zeroizing<Vec<u8>>>, EngineError> {
        let group = self.group(g)?;
        let msg = parse(message)?;
        if msg.epoch() != Some(group.current_epoch()) {
            return Ok(None);
        }
        let context = self.group_context(g)?;
        let Ok(input) = membership_tag_input(message, &context) else { return Ok(None) };
        let Some(group) = self.groups.get_mut(g) else { return Err(EngineError::NoSuchGroup(g.clone())) };
        self.tap.start();
        let outcome = group.process_incoming_message(msg);
        let calls = self.tap.stop();
        // mls-rs may have changed the group in memory: back to what is stored.
        self.reload(g)?;
        if !matches!(outcome, Err(MlsError::InvalidMembershipTag)) {
            return Ok(None);
        }
        let Some((key, _)) = calls.into_iter().find(|(_, data)| *data == input) else { return Ok(None) };
        // The key must be one under which the tag fails, or it proves nothing.
        match membership_tag_verifies(message, &context, &key) {
            Ok(false) => Ok(Some(key)),
            _ => Ok(None),
        }
    }
}
