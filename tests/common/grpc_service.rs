//! What the gRPC tests and the gRPC load bench share: the one message (hand-written for
//! prost, so no code generation is needed) and a tower service made of an async function of
//! the request, which a tonic server can serve. Included with `#[path]` by tests/grpc.rs and
//! benches/grpc_load.rs only, so the other test crates do not build tonic.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The one message: a text.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(string, tag = "1")]
    pub text: String,
}

pub fn msg(text: &str) -> Msg {
    Msg { text: text.into() }
}

pub type Codec = tonic_prost::ProstCodec<Msg, Msg>;
pub type Body = tonic::body::Body;

/// A tonic-servable service that answers each request with `self.0(request)`.
#[derive(Clone)]
pub struct Serve<F>(pub F);

impl<F, Fut> tower::Service<http::Request<Body>> for Serve<F>
where
    F: Fn(http::Request<Body>) -> Fut,
    Fut: Future<Output = http::Response<Body>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let answer = (self.0)(req);
        Box::pin(async move { Ok(answer.await) })
    }
}
