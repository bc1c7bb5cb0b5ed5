"""The text and its tokens: corpora (the builtin one, files, named public corpora fetched once),
tokenizers, and the token cache with the batch sampler."""
