"""Embeddings with plain transformers: CLS pooling and L2 normalisation, as bge models expect."""

from __future__ import annotations

import threading
from typing import Any


class EmbeddingModel:
    def __init__(self, path: str, device: Any, batch_size: int = 32):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self.lock = threading.Lock()

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        vectors: list[list[float]] = []
        tokens = 0
        with self.lock, self.torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(texts[start : start + self.batch_size], padding=True, truncation=True, max_length=512, return_tensors="pt")
                tokens += int(batch["attention_mask"].sum())
                batch = {k: v.to(self.device) for k, v in batch.items()}
                output = self.model(**batch)
                cls = output.last_hidden_state[:, 0]
                cls = self.torch.nn.functional.normalize(cls.float(), p=2, dim=1)
                vectors.extend(cls.cpu().tolist())
        return vectors, tokens
