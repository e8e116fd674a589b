"""Event types of the ledger. The names are part of the ledger format: never rename one."""

SERIES_CONFIGURED = "SeriesConfigured"
NUMBER_RESERVED = "NumberReserved"
NUMBER_ISSUED = "NumberIssued"
NUMBER_RELEASED = "NumberReleased"
NUMBER_VOIDED = "NumberVoided"
DOCUMENT_UPDATED = "DocumentUpdated"
DOCUMENT_IMPORTED = "DocumentImported"
# A run of counter numbers skipped because imported documents carry them (or one released
# number an import claimed from the pool).
EXTERNAL_NUMBER_DETECTED = "ExternalNumberDetected"
PEER_REGISTERED = "PeerRegistered"
PEER_TOKEN_ROTATED = "PeerTokenRotated"
PEER_RETIRED = "PeerRetired"
PEER_CONFIG_REPORTED = "PeerConfigReported"
WARNING_RAISED = "WarningRaised"
WARNING_RESOLVED = "WarningResolved"

# Events that belong to one reservation (a retry carrying one's event id gets its receipt).
RESERVATION_EVENTS = frozenset({NUMBER_RESERVED, NUMBER_ISSUED, NUMBER_RELEASED, NUMBER_VOIDED})
