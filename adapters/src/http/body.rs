//! Reading an answer's body with a size limit: a server that sends more (or lies about its
//! `Content-Length`, or sends none) is cut off before Steward holds more than the limit.

use reqwest::Response;

/// Why a body could not be read whole.
#[derive(Debug)]
pub enum BodyError {
    /// The answer is larger than the limit (announced or counted).
    TooLarge { limit: u64 },
    /// The request's time ran out while the body came in.
    Timeout(reqwest::Error),
    /// The connection failed while the body came in.
    Read(reqwest::Error),
}

/// The body of `resp`, refused past `limit` bytes: checked against the announced length first,
/// then per chunk, so that a lying or absent `Content-Length` cannot make us hold more.
pub async fn read_limited(resp: &mut Response, limit: u64) -> Result<Vec<u8>, BodyError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge { limit });
    }
    // Sized once from the announced length (already checked against the limit): growing by
    // doubling copied a fleet's answers of several MB about twice over.
    let announced = resp.content_length().unwrap_or(0);
    let mut buf = Vec::with_capacity(usize::try_from(announced).unwrap_or(0));
    while let Some(chunk) = resp.chunk().await.map_err(|e| {
        if e.is_timeout() {
            BodyError::Timeout(e)
        } else {
            BodyError::Read(e)
        }
    })? {
        if buf.len() as u64 + chunk.len() as u64 > limit {
            return Err(BodyError::TooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// At most `max` characters of a body, for an error message (the rest becomes `…`).
pub fn snippet(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut out: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every connection with a chunked body of `chunks` x 1000 bytes and
    /// no Content-Length: only counting the chunks can stop it.
    async fn chunked_server(chunks: usize) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 1024];
                    let _ = conn.read(&mut request).await;
                    let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                    for _ in 0..chunks {
                        out.extend_from_slice(b"3e8\r\n");
                        out.extend_from_slice(&[b'x'; 1000]);
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"0\r\n\r\n");
                    let _ = conn.write_all(&out).await;
                });
            }
        });
        format!("http://{addr}/")
    }

    #[tokio::test]
    async fn a_body_without_a_length_is_cut_at_the_limit_and_one_within_it_is_whole() {
        let url = chunked_server(10).await;
        let client = reqwest::Client::new();
        let mut resp = client.get(&url).send().await.unwrap();
        assert_eq!(resp.content_length(), None);
        assert!(matches!(
            read_limited(&mut resp, 4096).await,
            Err(BodyError::TooLarge { limit: 4096 })
        ));
        let mut resp = client.get(&url).send().await.unwrap();
        assert_eq!(read_limited(&mut resp, 10_000).await.unwrap().len(), 10_000);
    }

    #[test]
    fn a_snippet_is_cut_on_characters_not_bytes() {
        assert_eq!(snippet("  ééé  ".as_bytes(), 2), "éé…");
        assert_eq!(snippet(b"ok", 2), "ok");
    }
}
