"""Pure domain types with no I/O. ``model.samples`` needs numpy (server side only);
``model.labels`` and ``model.matchers`` are pure Python and safe for the agent."""
