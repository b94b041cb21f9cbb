"""Talk to the deployed API with the official openai client (pip install openai)."""

import os

from openai import OpenAI

client = OpenAI(base_url=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:6006/v1"), api_key=os.environ.get("OPENAI_API_KEY", "none"))
reply = client.chat.completions.create(model="chatglm3-6b", messages=[{"role": "user", "content": "你好"}])
print(reply.choices[0].message.content)
