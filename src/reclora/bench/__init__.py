"""Benchmarks: quality (CRM vs vanilla LoRA vs RecLoRA on real data) and speed (step time, MFU, memory)."""
