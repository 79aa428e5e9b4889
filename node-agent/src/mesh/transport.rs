//! TCP (Noise, Yamux), QUIC, and circuits through relays (libp2p relay v2, also with Noise and
//! Yamux), with every substream's bytes counted for the bandwidth figure.
//!
//! The counts are of application bytes on substreams (gossip, Kademlia, identify, ping),
//! without the Noise, Yamux or QUIC framing: what the node really moved for the mesh.

use super::error::MeshError;
use futures::future::Either;
use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerBox, StreamMuxerEvent, SubstreamBox};
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::Version;
use libp2p::{PeerId, Transport, identity::Keypair, noise, quic, relay, tcp, yamux};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

/// Bytes moved over every connection of one swarm, both directions.
#[derive(Clone, Debug, Default)]
pub(crate) struct ByteCounters {
    inbound: Arc<AtomicU64>,
    outbound: Arc<AtomicU64>,
}

impl ByteCounters {
    /// (received, sent) so far.
    pub(crate) fn totals(&self) -> (u64, u64) {
        (
            self.inbound.load(Ordering::Relaxed),
            self.outbound.load(Ordering::Relaxed),
        )
    }
}

/// The swarm's transport: a relay circuit, TCP+Noise+Yamux or QUIC, whichever the address
/// names. `relay` is the relay client's transport half (its behaviour half goes into the
/// swarm's behaviour).
pub(crate) fn build(
    keypair: &Keypair,
    relay: relay::client::Transport,
    counters: ByteCounters,
    handshake_timeout: Duration,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, MeshError> {
    let noise = || {
        noise::Config::new(keypair).map_err(|e| MeshError::Build {
            what: "Noise handshake",
            reason: e.to_string(),
        })
    };
    // A circuit is a stream through the relay: it gets its own end-to-end Noise and Yamux.
    let relayed = relay
        .upgrade(Version::V1Lazy)
        .authenticate(noise()?)
        .multiplex(yamux::Config::default())
        .timeout(handshake_timeout);
    let tcp = tcp::tokio::Transport::new(tcp::Config::new().nodelay(true))
        .upgrade(Version::V1Lazy)
        .authenticate(noise()?)
        .multiplex(yamux::Config::default())
        .timeout(handshake_timeout);
    let mut quic_config = quic::Config::new(keypair);
    quic_config.handshake_timeout = handshake_timeout;
    let quic = quic::tokio::Transport::new(quic_config);
    Ok(relayed
        .or_transport(tcp)
        .or_transport(quic)
        .map(move |either, _| {
            let (peer, muxer) = match either {
                Either::Left(Either::Left((peer, muxer))) => (peer, StreamMuxerBox::new(muxer)),
                Either::Left(Either::Right((peer, muxer))) => (peer, StreamMuxerBox::new(muxer)),
                Either::Right((peer, muxer)) => (peer, StreamMuxerBox::new(muxer)),
            };
            let counted = Counted {
                inner: muxer,
                counters: counters.clone(),
            };
            (peer, StreamMuxerBox::new(counted))
        })
        .boxed())
}

/// A muxer or a substream whose traffic is added to `counters`.
struct Counted<T> {
    inner: T,
    counters: ByteCounters,
}

impl Counted<StreamMuxerBox> {
    fn wrap(&self, stream: SubstreamBox) -> SubstreamBox {
        SubstreamBox::new(Counted {
            inner: stream,
            counters: self.counters.clone(),
        })
    }
}

impl StreamMuxer for Counted<StreamMuxerBox> {
    type Substream = SubstreamBox;
    type Error = io::Error;

    fn poll_inbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        Pin::new(&mut this.inner)
            .poll_inbound(cx)
            .map_ok(|s| this.wrap(s))
    }

    fn poll_outbound(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        let this = self.get_mut();
        Pin::new(&mut this.inner)
            .poll_outbound(cx)
            .map_ok(|s| this.wrap(s))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        Pin::new(&mut self.get_mut().inner).poll(cx)
    }
}

fn count(counter: &AtomicU64, done: &Poll<io::Result<usize>>) {
    if let Poll::Ready(Ok(n)) = done {
        counter.fetch_add(*n as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Counted<SubstreamBox> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.inner).poll_read(cx, buf);
        count(&this.counters.inbound, &done);
        done
    }

    fn poll_read_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.inner).poll_read_vectored(cx, bufs);
        count(&this.counters.inbound, &done);
        done
    }
}

impl AsyncWrite for Counted<SubstreamBox> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.inner).poll_write(cx, buf);
        count(&this.counters.outbound, &done);
        done
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        count(&this.counters.outbound, &done);
        done
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}
