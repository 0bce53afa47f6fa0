"""The core API, by role: home state, knowledge base, models, apps, answering,
governance; `alicerce.platform.Alicerce` is all of them."""
