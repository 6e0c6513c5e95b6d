//! Raw HTTP/2 on the gRPC port: broken framing and bodies that are no
//! protobuf message.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use pgpilot_proto::pb;
use pgpilot_sim::rng::Rng;
use pgpilot_tests::raw_grpc::{self, RawAnswer, RawRequest};
use prost::Message as _;
use tonic::Code;

use crate::calls::RPCS;
use crate::oracle::{sentence_problem, REFUSALS};
use crate::CALL_TIMEOUT;

/// A protobuf field: key and value.
pub(crate) fn field_bytes(number: u32, wire_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_varint(u64::from(number << 3 | u32::from(wire_type)), &mut out);
    out.extend_from_slice(payload);
    out
}

pub(crate) fn length_delimited(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    prost::encoding::encode_varint(bytes.len() as u64, &mut payload);
    payload.extend_from_slice(bytes);
    field_bytes(number, 2, &payload)
}

/// A body no generated client sends, and what it is.
pub(crate) fn raw_case(rng: &mut Rng, rpc: &str) -> (&'static str, RawRequest) {
    let valid = pb::GetFormationStateRequest {
        formation: "default".into(),
    }
    .encode_to_vec();
    let random: Vec<u8> = (0..rng.range(0, 300))
        .map(|_| rng.next_u64() as u8)
        .collect();
    match rng.below(14) {
        0 => (
            "random protobuf bytes",
            RawRequest::grpc(rpc, raw_grpc::frame(&random)),
        ),
        1 => (
            "a string field that is not UTF-8",
            RawRequest::grpc(
                rpc,
                raw_grpc::frame(&length_delimited(1, &[0xff, 0xfe, b'a', 0xc3])),
            ),
        ),
        2 => (
            "a field with a wire type its type does not have",
            RawRequest::grpc(rpc, raw_grpc::frame(&field_bytes(1, 5, &[1, 2, 3, 4]))),
        ),
        3 => (
            "a truncated varint",
            RawRequest::grpc(rpc, raw_grpc::frame(&field_bytes(4, 0, &[0xff, 0xff]))),
        ),
        4 => (
            "a length-delimited field longer than the message",
            RawRequest::grpc(rpc, raw_grpc::frame(&field_bytes(2, 2, &[0x7f, b'a']))),
        ),
        5 => (
            "unknown fields and a nested message full of junk",
            RawRequest::grpc(
                rpc,
                raw_grpc::frame(
                    &[length_delimited(99, &random), length_delimited(8, &random)].concat(),
                ),
            ),
        ),
        6 => ("a compressed flag without grpc-encoding", {
            let mut framed = raw_grpc::frame(&valid);
            framed[0] = 1;
            RawRequest::grpc(rpc, framed)
        }),
        7 => ("an unknown grpc-encoding", {
            let mut r = RawRequest::grpc(rpc, raw_grpc::frame(&valid));
            r.headers.push(("grpc-encoding".into(), "snappy-x".into()));
            r.body[0] = 1;
            r
        }),
        8 => ("a frame longer than its data", {
            let mut framed = raw_grpc::frame(&valid);
            framed[1..5].copy_from_slice(&((valid.len() + 50) as u32).to_be_bytes());
            RawRequest::grpc(rpc, framed)
        }),
        9 => ("a frame announcing 4 GiB", {
            let mut framed = raw_grpc::frame(&valid);
            framed[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
            RawRequest::grpc(rpc, framed)
        }),
        10 => ("no message at all", RawRequest::grpc(rpc, Vec::new())),
        11 => (
            "two messages to a unary method",
            RawRequest::grpc(
                rpc,
                [raw_grpc::frame(&valid), raw_grpc::frame(&valid)].concat(),
            ),
        ),
        12 => ("another content type", {
            let mut r = RawRequest::grpc(rpc, raw_grpc::frame(&valid));
            r.content_type = Some(
                rng.pick(&["text/plain", "application/json", "application/grpc-web"])
                    .to_string(),
            );
            r
        }),
        _ => ("an unknown method", {
            let mut r = RawRequest::grpc(rpc, raw_grpc::frame(&valid));
            r.path = rng
                .pick(&[
                    "/pgpilot.v1.Monitor/DropEverything",
                    "/other.Service/Call",
                    "/",
                    "/pgpilot.v1.Monitor/",
                ])
                .to_string();
            r
        }),
    }
}

/// What tonic itself answers, before any handler of the monitor runs, to a
/// request that is no well-formed gRPC message: gRPC's codes for it
/// (Internal for a body that does not parse, Unimplemented for a
/// compression it lacks), each with its reason.
pub(crate) const TRANSPORT_REFUSALS: [(Code, &str); 5] = [
    (Code::Internal, "failed to decode Protobuf message: "),
    (Code::Internal, "Unexpected EOF decoding stream."),
    (
        Code::Internal,
        "received message with compressed-flag but no grpc-encoding was specified",
    ),
    (Code::Internal, "Missing request message."),
    (Code::Unimplemented, "which isn't supported"),
];

/// Check a raw answer: a body that parses reaches a handler, which must
/// answer as to any request; one that does not is refused by tonic with
/// its reason; an unknown method is Unimplemented.
pub(crate) fn check_raw(what: &str, answer: &RawAnswer) -> std::result::Result<(), String> {
    let RawAnswer::Status { code, message, .. } = answer else {
        return Err(format!("answered {answer:?}"));
    };
    if what == "a frame announcing 4 GiB" && *code != Code::OutOfRange {
        return Err(format!("answered {code:?}, not OutOfRange: {message}"));
    }
    match code {
        Code::Ok => Ok(()),
        _ if REFUSALS.contains(code) => {
            sentence_problem(message).map_or(Ok(()), |p| Err(format!("{code:?}: {p}: {message:?}")))
        }
        _ if TRANSPORT_REFUSALS
            .iter()
            .any(|(c, m)| c == code && message.contains(m)) =>
        {
            Ok(())
        }
        Code::Unimplemented if what == "an unknown method" => Ok(()),
        _ => Err(format!("answered {code:?}: {message}")),
    }
}

pub(crate) async fn raw_fuzz(
    seed: u64,
    addr: SocketAddr,
    cases: usize,
) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut rng = Rng::new(seed ^ 0x7261_7721);
    let mut answers: BTreeMap<String, usize> = BTreeMap::new();
    let mut samples: BTreeMap<(&str, String), String> = BTreeMap::new();
    let mut failures = Vec::new();
    for i in 0..cases {
        let rpc = rng.pick(&RPCS);
        let (what, request) = raw_case(&mut rng, rpc);
        let answer = raw_grpc::call(addr, &request, CALL_TIMEOUT).await;
        let verdict = match &answer {
            Ok(a) => check_raw(what, a),
            Err(e) => Err(format!("{e:#}")),
        };
        let key = match &answer {
            Ok(RawAnswer::Status { code, .. }) => format!("{code:?}"),
            Ok(RawAnswer::Http { status }) => format!("HTTP {status}"),
            Ok(RawAnswer::Reset(_)) => "reset".to_string(),
            Err(_) => "error".to_string(),
        };
        if let Ok(RawAnswer::Status { message, .. } | RawAnswer::Reset(message)) = &answer {
            samples
                .entry((what, key.clone()))
                .or_insert_with(|| message.clone());
        }
        *answers.entry(key).or_default() += 1;
        if let Err(problem) = verdict {
            failures.push(format!(
                "seed {seed} raw case {i}: {what} to {} ({} body bytes {:02x?}): {problem}",
                request.path,
                request.body.len(),
                &request.body[..request.body.len().min(24)]
            ));
        }
    }
    for ((what, code), message) in &samples {
        eprintln!("  raw: {what}: {code}: {message}");
    }
    // Bytes that are no HTTP/2 at all, and the HTTP/2 preface followed by junk.
    for _ in 0..cases / 10 {
        let mut bytes: Vec<u8> = (0..rng.range(1, 65_536))
            .map(|_| rng.next_u64() as u8)
            .collect();
        if rng.chance(0.5) {
            bytes.splice(0..0, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".iter().copied());
        }
        let _ = raw_grpc::send_bytes(addr, &bytes, Duration::from_secs(2)).await;
    }
    (answers, failures)
}
