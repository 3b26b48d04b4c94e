//! The loopback suite (`lightning_tests::suite`) on each runtime adapter: the same test
//! bodies, once on tokio and once on smol.

macro_rules! suite_on {
    ($module:ident, $runtime:expr, $block_on:path) => {
        mod $module {
            use lightning_tests::suite;

            #[test]
            fn echo_sizes() {
                $block_on(suite::echo_sizes($runtime))
            }

            #[test]
            fn concurrent_queries() {
                $block_on(suite::concurrent_queries($runtime))
            }

            #[test]
            fn streaming_thousand_chunks() {
                $block_on(suite::streaming_thousand_chunks($runtime))
            }

            #[test]
            fn reconnect_after_server_restart() {
                $block_on(suite::reconnect_after_server_restart($runtime))
            }

            #[test]
            fn dropped_query_cancels_handler() {
                $block_on(suite::dropped_query_cancels_handler($runtime))
            }

            #[test]
            fn dropped_stream_cancels() {
                $block_on(suite::dropped_stream_cancels($runtime))
            }

            #[test]
            fn handler_timeout() {
                $block_on(suite::handler_timeout($runtime))
            }

            #[test]
            fn client_timeout() {
                $block_on(suite::client_timeout($runtime))
            }

            #[test]
            fn error_strings() {
                $block_on(suite::error_strings($runtime))
            }

            #[test]
            fn permit_refused() {
                $block_on(suite::permit_refused($runtime))
            }

            #[test]
            fn wrong_miner_hotkey_refused() {
                $block_on(suite::wrong_miner_hotkey_refused($runtime))
            }

            #[test]
            fn registry_reconciliation() {
                $block_on(suite::registry_reconciliation($runtime))
            }

            #[test]
            fn typed_round_trip() {
                $block_on(suite::typed_round_trip($runtime))
            }

            #[test]
            fn concurrent_large_payloads() {
                $block_on(suite::concurrent_large_payloads($runtime))
            }

            #[test]
            fn callback_signer() {
                $block_on(suite::callback_signer($runtime))
            }
        }
    };
}

suite_on!(
    tokio,
    lightning_tokio::Tokio::default(),
    lightning_tests::tokio_block_on
);
suite_on!(
    smol,
    lightning_smol::Smol::default(),
    lightning_tests::smol_block_on
);
