"""The standards tables for cloud code; they live in groundwatch.standards (shared
with the gateway, which must not import cloud)."""

from groundwatch.standards import (
    CLASSES, GroundwaterLimit, SoilLimit, UnitError, convert, groundwater_limit,
    groundwater_table, is_concentration, is_soil_unit, parameter_id, soil_limit,
    soil_table,
)

__all__ = ["CLASSES", "GroundwaterLimit", "SoilLimit", "UnitError", "convert",
           "groundwater_limit", "groundwater_table", "is_concentration", "is_soil_unit",
           "parameter_id", "soil_limit", "soil_table"]
