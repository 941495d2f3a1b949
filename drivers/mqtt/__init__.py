"""The `mqtt` device kind: a subscriber to a plant-side broker that smart sensors publish to. Read-only."""
