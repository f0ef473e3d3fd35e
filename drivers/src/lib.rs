//! cllm-drivers: the thin binaries (cllm-train, cllm-generate, cllm-eval) land here with the
//! training, generation and evaluation issues. They parse arguments and call the engine.
