//! Rotation notices on `patchpanda-rotation-events`:
//! `RotationNotice::from_data`, `to_message`, and `NoticeEvent`'s text form.
//!
//! Input: the message data as-is (JSON).
//! Invariants: parse -> serialize -> parse gives the same notice; the
//! message's data parses back to it and its attributes mirror its fields;
//! a refusal is an InvalidArgument on one line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use patchpanda_shared::Error;
use patchpanda_shared::notice::{NoticeEvent, RotationNotice};

fuzz_target!(|data: &[u8]| {
    let notice = match RotationNotice::from_data(data) {
        Ok(n) => n,
        Err(Error::InvalidArgument(m)) => {
            assert!(!m.contains('\n'), "multi-line refusal: {m:?}");
            return;
        }
        Err(other) => panic!("a bad notice must be InvalidArgument, got {other:?}"),
    };

    let bytes = serde_json::to_vec(&notice).expect("a notice serializes");
    assert_eq!(
        RotationNotice::from_data(&bytes).ok().as_ref(),
        Some(&notice)
    );

    let message = notice.to_message();
    assert_eq!(
        RotationNotice::from_data(&message.data).ok().as_ref(),
        Some(&notice)
    );
    let attr = |k: &str| message.attributes.get(k).map(String::as_str);
    assert_eq!(attr("secret"), Some(notice.secret.as_str()));
    assert_eq!(attr("event"), Some(notice.event.as_str()));
    assert_eq!(attr("rotation_id"), Some(notice.rotation_id.as_str()));
    assert_eq!(
        attr("version"),
        notice.version.map(|v| v.to_string()).as_deref()
    );
    assert_eq!(
        attr("previous_version"),
        notice.previous_version.map(|v| v.to_string()).as_deref()
    );
    assert_eq!(attr("emergency"), notice.emergency.then_some("true"));

    let event: NoticeEvent = match notice.event.as_str().parse() {
        Ok(e) => e,
        Err(e) => panic!("an event's own name does not parse: {e}"),
    };
    assert_eq!(event, notice.event);
    assert_eq!(event.to_string(), event.as_str());

    // Any text: parses only to the event that prints as that text.
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(e) = text.parse::<NoticeEvent>()
    {
        assert_eq!(e.as_str(), text);
    }
});
