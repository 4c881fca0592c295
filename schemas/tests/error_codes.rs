//! The wire's error codes below 1000 are the engine's: same names, same numbers. The match is
//! exhaustive, so a new engine code does not compile until the schema and this list have it.

use promised_engine::ErrorCode as E;
use promised_schemas::wire::ErrorCode as W;

fn wire_of(code: E) -> W {
    match code {
        E::UnknownSku => W::UnknownSku,
        E::UnknownNode => W::UnknownNode,
        E::UnknownHold => W::UnknownHold,
        E::UnknownLot => W::UnknownLot,
        E::UnknownZone => W::UnknownZone,
        E::InvalidQuantity => W::InvalidQuantity,
        E::InvalidName => W::InvalidName,
        E::InvalidTtl => W::InvalidTtl,
        E::InvalidDate => W::InvalidDate,
        E::InvalidOption => W::InvalidOption,
        E::DuplicateLine => W::DuplicateLine,
        E::DuplicateLot => W::DuplicateLot,
        E::EmptyRequest => W::EmptyRequest,
        E::TooManyLines => W::TooManyLines,
        E::TooManyLots => W::TooManyLots,
        E::CapacityExceeded => W::CapacityExceeded,
        E::TooManyOperations => W::TooManyOperations,
        E::StaleFeedSequence => W::StaleFeedSequence,
        E::RequestIdReused => W::RequestIdReused,
        E::WrongHoldState => W::WrongHoldState,
        E::ExceedsHeld => W::ExceedsHeld,
        E::ExceedsAllocated => W::ExceedsAllocated,
        E::QuantityOverflow => W::QuantityOverflow,
        E::NegativeOnHand => W::NegativeOnHand,
        E::StorageFailed => W::StorageFailed,
    }
}

#[test]
fn engine_codes_have_the_same_numbers_and_names_on_the_wire() {
    let engine_codes = [
        E::UnknownSku,
        E::UnknownNode,
        E::UnknownHold,
        E::UnknownLot,
        E::UnknownZone,
        E::InvalidQuantity,
        E::InvalidName,
        E::InvalidTtl,
        E::InvalidDate,
        E::InvalidOption,
        E::DuplicateLine,
        E::DuplicateLot,
        E::EmptyRequest,
        E::TooManyLines,
        E::TooManyLots,
        E::CapacityExceeded,
        E::TooManyOperations,
        E::StaleFeedSequence,
        E::RequestIdReused,
        E::WrongHoldState,
        E::ExceedsHeld,
        E::ExceedsAllocated,
        E::QuantityOverflow,
        E::NegativeOnHand,
        E::StorageFailed,
    ];
    for code in engine_codes {
        let wire = wire_of(code);
        assert_eq!(code as u16, wire.0, "{code:?}");
        assert_eq!(
            Some(format!("{code:?}").as_str()),
            wire.variant_name(),
            "{code:?}"
        );
    }
    // Every wire code below 1000 is an engine code.
    let below: Vec<_> = W::ENUM_VALUES.iter().filter(|w| w.0 < 1000).collect();
    assert_eq!(below.len(), engine_codes.len());
}
