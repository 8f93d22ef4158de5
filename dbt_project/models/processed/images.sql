with images as (
    select * from {{ ref('stg_images') }}
),

studies as (
    select study_instance_uid, patient_key from {{ ref('stg_studies') }}
),

deidentified as (
    select
        {{ pseudo_uid('images.sop_instance_uid') }} as sop_instance_pseudo_uid,
        {{ pseudo_uid('images.series_instance_uid') }} as series_pseudo_uid,
        {{ pseudo_uid('images.study_instance_uid') }} as study_pseudo_uid,
        images.sop_class_uid,
        images.instance_number,
        images.image_type,
        {{ shift_date('images.content_date', 'studies.patient_key') }} as content_date_shifted,
        images.content_time,
        images.image_position_patient,
        images.image_orientation_patient,
        images.pixel_spacing,
        images.slice_thickness,
        images.slice_location,
        images.rows,
        images.columns,
        images.number_of_frames,
        images.samples_per_pixel,
        images.photometric_interpretation,
        images.bits_allocated,
        images.bits_stored,
        images.pixel_representation,
        images.rescale_intercept,
        images.rescale_slope,
        images.window_center,
        images.window_width,
        images.voi_lut_function,
        images.lossy_image_compression,
        images.transfer_syntax_uid,
        images.has_pixel_data,
        images.file_size
    from images
    left join studies on images.study_instance_uid = studies.study_instance_uid
)

select * from deidentified
