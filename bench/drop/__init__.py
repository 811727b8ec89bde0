"""The drop benchmark: 5,000 buyers, 300 units, one tweet."""
