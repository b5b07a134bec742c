"""Everything a person looks at: video / image writers with the settings embedded, and layouts.

See docs/RENDER.md for a guide.
"""

from vidgen.render.layout import contact_sheet, filmstrip, grid, label_band, line_plot, side_by_side, stack_strip
from vidgen.render.writer import (VideoWriter, open_writer, read_png_settings, read_settings, save_png,
                                  to_uint8_frames, write_video)

__all__ = ["VideoWriter", "open_writer", "write_video", "read_settings", "save_png", "read_png_settings",
           "to_uint8_frames", "grid", "side_by_side", "contact_sheet", "filmstrip", "stack_strip", "line_plot",
           "label_band"]
