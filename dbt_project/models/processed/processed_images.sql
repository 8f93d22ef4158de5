with images as (
    select * from {{ ref('images') }}
),

previews as (
    select
        {{ pseudo_uid('sop_instance_uid') }} as sop_instance_pseudo_uid,
        preview_key,
        preview_bytes,
        preview_width,
        preview_height,
        frame_index as preview_frame_index
    from {{ ref('stg_previews') }}
),

joined as (
    select
        images.sop_instance_pseudo_uid,
        images.series_pseudo_uid,
        images.study_pseudo_uid,
        images.sop_class_uid,
        images.rows,
        images.columns,
        images.number_of_frames,
        images.photometric_interpretation,
        images.transfer_syntax_uid,
        images.has_pixel_data,
        previews.preview_key,
        previews.preview_bytes,
        previews.preview_width,
        previews.preview_height,
        previews.preview_frame_index
    from images
    left join previews on images.sop_instance_pseudo_uid = previews.sop_instance_pseudo_uid
)

select * from joined
