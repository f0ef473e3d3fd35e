//! cllm-tools: data and maintenance binaries (`cllm-bench`, later `cllm-prepare`).
