//! gRPC request metrics: a tower layer that counts and times every request
//! by method and status code, with label values from bounded lists.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use metrics::{counter, histogram};

use super::{GRPC_REQUESTS, GRPC_SECONDS};

/// Counts and times every gRPC request by method and status code.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
}

/// The method of a gRPC path, from the protocol's own list (anything else
/// is "unknown", so a scanner cannot grow the label set).
pub fn grpc_method(path: &str) -> &'static str {
    const METHODS: [&str; 13] = [
        "RegisterNode",
        "NodeActive",
        "GetFormationState",
        "ListEvents",
        "PerformFailover",
        "SetNumberSyncStandbys",
        "SetNodeSettings",
        "SetMaintenance",
        "DropNode",
        "ReinitNode",
        "CreateFormation",
        "DropFormation",
        "ListFormations",
    ];
    path.strip_prefix("/pgpilot.v1.Monitor/")
        .and_then(|m| METHODS.iter().find(|k| **k == m).copied())
        .unwrap_or("unknown")
}

/// The name of a gRPC status code (as in `grpc-status`).
pub fn grpc_code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Cancelled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    RB: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = grpc_method(request.uri().path());
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            // A unary reply's status is in the trailers when it succeeded
            // and in the headers ("trailers-only") when it failed.
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map(grpc_code_name)
                    .unwrap_or("OK"),
                Err(_) => "transport_error",
            };
            counter!(GRPC_REQUESTS, "method" => method, "code" => code).increment(1);
            histogram!(GRPC_SECONDS, "method" => method).record(started.elapsed().as_secs_f64());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_labels_are_bounded() {
        assert_eq!(grpc_method("/pgpilot.v1.Monitor/NodeActive"), "NodeActive");
        assert_eq!(grpc_method("/pgpilot.v1.Monitor/Nope"), "unknown");
        assert_eq!(grpc_method("/other/NodeActive"), "unknown");
        assert_eq!(grpc_code_name(0), "OK");
        assert_eq!(grpc_code_name(14), "Unavailable");
        assert_eq!(grpc_code_name(99), "Unknown");
    }
}
