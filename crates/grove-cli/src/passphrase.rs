//! The passphrase of a profile locked at rest: from the environment (scripts) or a prompt
//! without echo on the terminal.

use std::path::Path;

use anyhow::{anyhow, Context};
use grove_client::profile::Profile;
use grove_client::Passphrase;
use zeroize::Zeroizing;

/// The passphrase of a profile, in the environment.
pub const ENV: &str = "GROVE_PASSPHRASE";
/// The new passphrase of `grove passphrase`, in the environment.
pub const NEW_ENV: &str = "GROVE_NEW_PASSPHRASE";

/// The passphrase to open the profile in `dir`: `None` when it has none, else
/// `GROVE_PASSPHRASE` or the prompt.
pub fn current(dir: &Path) -> anyhow::Result<Option<Passphrase>> {
    if !Profile::is_locked(dir)? {
        return Ok(None);
    }
    if let Some(p) = from_env(ENV)? {
        return Ok(Some(p));
    }
    let prompt = format!("passphrase of the profile in {}: ", dir.display());
    Ok(Some(Passphrase::new(read(&prompt, ENV)?.to_string())?))
}

/// A new passphrase: `env` or the prompt, asked twice.
pub fn choose(env: &str) -> anyhow::Result<Passphrase> {
    if let Some(p) = from_env(env)? {
        return Ok(p);
    }
    let first = read("new passphrase: ", env)?;
    let second = read("the same passphrase again: ", env)?;
    if first != second {
        return Err(anyhow!("the two passphrases differ: nothing was changed; try again"));
    }
    Ok(Passphrase::new(first.to_string())?)
}

fn from_env(env: &str) -> anyhow::Result<Option<Passphrase>> {
    match std::env::var(env) {
        Ok(v) => Ok(Some(Passphrase::new(v).with_context(|| format!("{env} is empty"))?)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(anyhow!("{env} is not valid UTF-8")),
    }
}

fn read(prompt: &str, env: &str) -> anyhow::Result<Zeroizing<String>> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(anyhow!(
            "this profile is locked with a passphrase and there is no terminal to ask it on: set {env}"
        ));
    }
    rpassword::prompt_password(prompt)
        .map(Zeroizing::new)
        .map_err(|e| anyhow!("cannot ask for the passphrase on a terminal ({e}): set {env}"))
}
