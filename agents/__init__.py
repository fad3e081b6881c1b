"""The CulturePark protocol on top of the engine: cultures, WVS personas, agent views, turn policies."""
