//! Inventory import (being written).
