"""Discovery: provider adverts (schema, signing, validation), the directory of live providers,
and the service that announces and listens on the overlay."""
