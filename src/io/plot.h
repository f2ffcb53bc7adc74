// io/plot.h -- small SVG line plots for the run folder (loss, kNN accuracy per
// epoch): axes with ticks, one polyline per series, a legend. Written
// atomically.
#pragma once

#include <string>
#include <vector>

namespace npid {

struct PlotSeries {
  std::string name;
  std::vector<double> x, y;  // points with non-finite y are skipped
};

void write_svg_plot(const std::string& path, const std::string& title, const std::string& x_label,
                    const std::string& y_label, const std::vector<PlotSeries>& series);

}  // namespace npid
