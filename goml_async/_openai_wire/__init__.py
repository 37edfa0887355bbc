"""OpenAI's wire format, sans-I/O, in one place for the client, the server and the test server.

Pure functions and small writers over dicts and JSON text; the SSE framing is
:mod:`goml_async._sse`'s. Each shape has one module, which writes it and reads it back:

- :mod:`.requests`: the request bodies a client sends;
- :mod:`.chunks`: ``chat.completion``, ``text_completion`` and their streamed chunks;
- :mod:`.usage`: ``usage``, llama.cpp's ``timings`` and ``finish_reason``;
- :mod:`.logprobs`: log-probabilities in the chat and the legacy completions shapes;
- :mod:`.errors`: the error body, ``{"error": {...}}``, in OpenAI's shape and llama.cpp's;
- :mod:`.parse`: a client reading a stream, one event's data at a time;
- :mod:`.json_text`: JSON text as all of them write it.

``backends/_openai.py`` (the HTTP client), ``server/_wire.py`` with ``server/events.py`` (the
server) and ``testing/_openai_wire.py`` (FakeOpenAIServer) build on these modules.
"""
