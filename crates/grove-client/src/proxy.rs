//! A SOCKS5 proxy for everything the client sends (`grove --proxy socks5h://HOST:PORT`): Tor's
//! SOCKS port, Lokinet's, or any SOCKS5 proxy.
//!
//! Every HTTP request of a [`crate::Server`] built with a proxy goes through it
//! (reqwest's `socks5h` proxy, with the environment's proxies switched off), and so does the
//! push WebSocket ([`Proxy::connect`]). Host names are sent to the proxy to resolve, never
//! looked up here, so `.onion` and `.loki` servers work and no DNS query leaves the machine. A
//! proxy that cannot be reached fails the request: nothing ever falls back to a direct
//! connection.

use tokio::net::TcpStream;

/// A SOCKS5 proxy that resolves names (`socks5h://HOST:PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    host: String,
    port: u16,
}

impl Proxy {
    /// Parses `socks5h://HOST:PORT` (also `socks5://`, which is taken the same way: names are
    /// always resolved by the proxy).
    pub fn parse(s: &str) -> Result<Proxy, String> {
        let bad = |why: &str| format!("{s:?} is not a SOCKS5 proxy like socks5h://127.0.0.1:9050: {why}");
        let rest = s
            .strip_prefix("socks5h://")
            .or_else(|| s.strip_prefix("socks5://"))
            .ok_or_else(|| bad("grove goes through SOCKS5 proxies only (socks5h://)"))?;
        let rest = rest.trim_end_matches('/');
        if rest.contains('@') || rest.contains('/') {
            return Err(bad("give only HOST:PORT, without a user or a path"));
        }
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("the port is missing"))?;
        let port: u16 = port.parse().map_err(|_| bad("the port is not a number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || port == 0 {
            return Err(bad("the host or the port is missing"));
        }
        Ok(Proxy { host: host.to_string(), port })
    }

    /// The proxy as a URL, `socks5h://HOST:PORT`.
    pub fn url(&self) -> String {
        if self.host.contains(':') {
            format!("socks5h://[{}]:{}", self.host, self.port)
        } else {
            format!("socks5h://{}:{}", self.host, self.port)
        }
    }

    /// The proxy for reqwest.
    pub(crate) fn for_reqwest(&self) -> Result<reqwest::Proxy, reqwest::Error> {
        reqwest::Proxy::all(self.url())
    }

    /// A TCP connection to `host:port` through the proxy, the name resolved by the proxy.
    pub async fn connect(&self, host: &str, port: u16) -> std::io::Result<TcpStream> {
        let stream = tokio_socks::tcp::Socks5Stream::connect((self.host.as_str(), self.port), (host, port))
            .await
            .map_err(|e| std::io::Error::other(format!("through the proxy {}: {e}", self.url())))?;
        Ok(stream.into_inner())
    }
}

impl std::fmt::Display for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_parse_and_what_is_not_one_is_refused() {
        assert_eq!(Proxy::parse("socks5h://127.0.0.1:9050").unwrap().url(), "socks5h://127.0.0.1:9050");
        assert_eq!(Proxy::parse("socks5://localhost:1080/").unwrap().url(), "socks5h://localhost:1080");
        assert_eq!(Proxy::parse("socks5h://[::1]:9050").unwrap().url(), "socks5h://[::1]:9050");
        for bad in
            ["http://127.0.0.1:3128", "socks5h://127.0.0.1", "socks5h://:9050", "socks5h://u:p@h:1", "socks4://h:1"]
        {
            assert!(Proxy::parse(bad).is_err(), "{bad}");
        }
    }
}
