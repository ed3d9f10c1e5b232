//! Frame decoding and body verification on arbitrary bytes: frame::decode, then for a
//! decodable frame the request dispatch check, verification and decoding (as the broker does),
//! the same body as the API's response and as an ErrorResponse (as the SDK does).
//!
//! Beyond "no panic", it checks that the layers agree: a body that decodes also verifies, and a
//! decoded message re-encodes to a body that decodes to the same message. Seed corpus: see
//! `write_fuzz_seeds` in proto/src/api/tests.rs.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use quiver_proto::api::{self, AnyRequest, AnyResponse, ApiKey, ErrorResponse, Message};
use quiver_proto::frame;

const FRAME_BYTES_MAX: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(f) = frame::decode(Bytes::copy_from_slice(data), FRAME_BYTES_MAX) else {
        return;
    };

    // The broker's path.
    match api::decode_request(&f.header, &f.body) {
        Ok(req) => {
            assert_eq!(
                api::verify_request(f.header.api_key, f.header.api_version, &f.body),
                Ok(req.api())
            );
            let again = AnyRequest::decode(req.api(), &req.encode()).expect("re-encoded decodes");
            assert_eq!(again, req);
            slice_payload_refs(&req, &f.payload);
        }
        Err(e) => {
            // The refusal must itself be a well-formed frame with a decodable body.
            let out = api::error_frame(&f.header, &e.to_error_response());
            let back = frame::decode(out, FRAME_BYTES_MAX).expect("error frame decodes");
            assert!(back.header.is_error_response());
            let body = ErrorResponse::decode(&back.body).expect("error body decodes");
            assert_eq!(body.error_code, e.error_code());
        }
    }

    // The SDK's path: the body as this API's response, or as an ErrorResponse.
    let _ = api::verify_response(f.header.api_key, f.header.flags, &f.body);
    if let Some(api) = ApiKey::from_u16(f.header.api_key) {
        if let Ok(resp) = AnyResponse::decode(api, &f.body) {
            assert!(api.verify_response_body(&f.body).is_ok());
            let again = AnyResponse::decode(api, &resp.encode()).expect("re-encoded decodes");
            assert_eq!(again, resp);
        }
    }
    if let Ok(e) = ErrorResponse::decode(&f.body) {
        assert_eq!(ErrorResponse::decode(&e.encode()), Ok(e));
    }
});

/// Payload references come from the peer: slicing must check them, never panic.
fn slice_payload_refs(req: &AnyRequest, payload: &Bytes) {
    match req {
        AnyRequest::Produce(p) => {
            for t in &p.topics {
                for part in &t.partitions {
                    if let Ok(b) = part.records.slice(payload) {
                        assert_eq!(b.len(), part.records.len as usize);
                    }
                }
            }
        }
        AnyRequest::RaftMessage(r) => {
            for m in &r.messages {
                let _ = m.slice(payload);
            }
        }
        _ => {}
    }
}
