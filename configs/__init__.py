"""ml_collections configs: `common` holds every field with its default and meaning;
`boot`, `flare`, `blaze` set a stage; `mix82` is the paper's data mix; `demo` is tiny."""
