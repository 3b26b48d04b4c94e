//! The interoperability suite against btlightning 0.2.15 (`lightning_interop`), once with
//! Lightning on tokio and once on smol. btlightning always runs on tokio, so every test
//! body runs in a tokio runtime; on smol, Lightning's endpoint and handler tasks run on
//! smol's executor and reactor beside it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

macro_rules! interop_on {
    ($module:ident, $runtime:expr) => {
        mod $module {
            use lightning_interop::{bt_to_lightning, lightning_to_bt, rejections, run};

            macro_rules! case {
                ($name:ident, $path:path) => {
                    #[test]
                    fn $name() {
                        run($path($runtime))
                    }
                };
            }

            // btlightning client -> Lightning server
            case!(bt_client_handshake, bt_to_lightning::handshake);
            case!(
                bt_client_follows_our_retry,
                bt_to_lightning::follows_our_retry
            );
            case!(bt_client_echo_sizes, bt_to_lightning::echo_sizes);
            case!(bt_client_concurrent_64, bt_to_lightning::concurrent_64);
            case!(bt_client_streaming, bt_to_lightning::streaming);
            case!(bt_client_unknown_synapse, bt_to_lightning::unknown_synapse);
            case!(bt_client_handler_error, bt_to_lightning::handler_error);
            case!(bt_client_typed, bt_to_lightning::typed);
            case!(
                bt_client_timeout_cancels_our_handler,
                bt_to_lightning::timeout_cancels_our_handler
            );
            case!(
                bt_client_dropped_stream_stops_our_handler,
                bt_to_lightning::dropped_stream_stops_our_handler
            );
            case!(
                bt_client_reconnects_after_our_restart,
                bt_to_lightning::reconnects_after_our_restart
            );
            case!(bt_client_value_kinds, bt_to_lightning::value_kinds);
            case!(
                bt_client_our_handler_timeout,
                bt_to_lightning::our_handler_timeout
            );
            case!(
                bt_client_several_hotkeys_one_address,
                bt_to_lightning::several_hotkeys_one_address
            );
            case!(
                bt_client_mismatched_reader,
                bt_to_lightning::mismatched_reader
            );
            case!(
                bt_client_refuses_unexpected_miner,
                bt_to_lightning::refuses_unexpected_miner
            );

            // Lightning client -> btlightning server
            case!(bt_server_handshake, lightning_to_bt::handshake);
            case!(bt_server_quic_retry, lightning_to_bt::through_quic_retry);
            case!(bt_server_echo_sizes, lightning_to_bt::echo_sizes);
            case!(bt_server_concurrent_64, lightning_to_bt::concurrent_64);
            case!(bt_server_streaming, lightning_to_bt::streaming);
            case!(bt_server_unknown_synapse, lightning_to_bt::unknown_synapse);
            case!(bt_server_handler_error, lightning_to_bt::handler_error);
            case!(bt_server_typed, lightning_to_bt::typed);
            case!(
                bt_server_mismatched_reader,
                lightning_to_bt::mismatched_reader
            );
            case!(bt_server_value_kinds, lightning_to_bt::value_kinds);
            case!(
                bt_server_handler_timeout,
                lightning_to_bt::bt_handler_timeout
            );
            case!(
                bt_server_our_timeout_and_dropped_stream,
                lightning_to_bt::our_timeout_and_dropped_stream
            );
            case!(
                bt_server_reconnect_after_restart,
                lightning_to_bt::reconnect_after_bt_restart
            );
            case!(
                bt_server_several_hotkeys_one_address,
                lightning_to_bt::several_hotkeys_one_address
            );
            case!(
                new_token_independent_of_build,
                lightning_to_bt::new_token_independent_of_build
            );
            case!(
                typed_unit_enum_all_pairings,
                lightning_to_bt::typed_unit_enum
            );

            // Rejections across implementations
            case!(
                bt_server_refuses_wrong_signature,
                rejections::bt_miner_refuses_wrong_signature
            );
            case!(
                our_server_refuses_wrong_bt_signature,
                bt_to_lightning::our_miner_refuses_wrong_signature
            );
            case!(
                bt_server_refuses_replayed_nonce,
                rejections::bt_miner_refuses_replayed_nonce
            );
            case!(
                bt_server_at_capacity_refuses_new_validator,
                rejections::bt_miner_at_capacity_refuses_new_validator
            );
            case!(
                our_server_at_capacity_refuses_bt_validator,
                rejections::our_miner_at_capacity_refuses_bt_validator
            );
            case!(
                our_client_refuses_unexpected_bt_miner,
                rejections::our_client_refuses_unexpected_bt_miner
            );
            case!(
                our_server_refuses_replayed_bt_handshake,
                rejections::our_miner_refuses_replayed_handshake
            );
            case!(
                our_server_wire_edges_read_by_bt,
                rejections::our_miner_wire_edges
            );
            case!(
                our_server_refuses_stale_bt_handshake,
                rejections::our_miner_refuses_stale_handshake
            );
        }
    };
}

interop_on!(tokio, lightning_tokio::Tokio::default());
interop_on!(smol, lightning_smol::Smol::default());

/// The suite's seeds give the hotkeys of PROTOCOL §4.5's test vectors (derived there with
/// Substrate's `Pair::from_seed`, which btlightning uses), so the handshakes above run
/// between the same identities as the reference's own tests.
#[test]
fn hotkey_test_vectors() {
    use lightning_interop::{hotkey, MINER_SEED, VALIDATOR_SEED};
    assert_eq!(
        hotkey(&MINER_SEED),
        "5CcyqxXnJucaCnQQvvUg5EPzj1uoNAxACZvzArHw5aVDvgNH"
    );
    assert_eq!(
        hotkey(&VALIDATOR_SEED),
        "5CfCr47V5Dte6bwxNBE8K9oNnQd9fiay6aDEEkgYtFv7w4Fq"
    );
}
