"""ChatGLM3's tokenizer: ChatGLM2's (tokenization_chatglm2.py, copied from the modelscope package) plus what
ChatGLM3 adds — the role tokens <|system|> <|user|> <|assistant|> <|observation|> (ids right after ChatGLM2's five
special tokens) and the chat-input builders.

glmops's own file, written from ChatGLM3's published behaviour (THUDM/chatglm3-6b): a message is its role token,
the metadata and a newline, then the text; a system message with `tools` carries them as indented JSON after its
text; the prompt ends with <|assistant|>; [gMASK] sop come first (ChatGLM2's prefix tokens).
"""

import json

from .tokenization_chatglm2 import ChatGLM2Tokenizer

ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]
ROLES = ["system", "user", "assistant", "observation"]


class ChatGLMTokenizer(ChatGLM2Tokenizer):
    def __init__(self, vocab_file, padding_side="left", **kwargs):
        super().__init__(vocab_file, padding_side=padding_side, **kwargs)
        sp = self.tokenizer
        for token in ROLE_TOKENS:
            sp.special_tokens[token] = sp.n_words
            sp.index_special_tokens[sp.n_words] = token
            sp.n_words += 1
        self.name = "GLMTokenizer"

    def build_single_message(self, role, metadata, message):
        assert role in ROLES, role
        role_tokens = [self.get_command(f"<|{role}|>")] + self.tokenizer.encode(f"{metadata}\n")
        return role_tokens + self.tokenizer.encode(message)

    def build_chat_input(self, query, history=None, role="user"):
        input_ids = []
        for item in history or []:
            content = item["content"]
            if item["role"] == "system" and "tools" in item:
                content = content + "\n" + json.dumps(item["tools"], indent=4, ensure_ascii=False)
            input_ids.extend(self.build_single_message(item["role"], item.get("metadata", ""), content))
        input_ids.extend(self.build_single_message(role, "", query))
        input_ids.extend([self.get_command("<|assistant|>")])
        return self.batch_encode_plus([input_ids], return_tensors="pt", is_split_into_words=True)
